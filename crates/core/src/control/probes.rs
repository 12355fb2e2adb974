//! What the admin endpoint's probes say, sans-IO: [`Liveness`] judges the
//! threads' heartbeats against `now`, [`readiness`] judges the engine's
//! state, and [`FileWatch`] decides when a changed config file is reloaded.
//!
//! Heartbeats: the control loop stamps its slot once a pass, each worker once
//! a poll iteration (idle waits included: a sleeping worker wakes at least
//! every 100 ms). A stamp is milliseconds since the engine's epoch; the
//! threads write it, [`Liveness::judge`] reads the stamps and the clock and
//! says which thread has not made progress for longer than the limit. A
//! thread that has not stamped yet (not started) is not judged.

use std::fmt;
use std::time::{Duration, Instant};

/// A thread that stamps a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Beater {
    /// The control loop (ARP, VRRP, snapshots, reloads).
    Control,
    /// Data-plane worker `n`.
    Worker(usize),
}

impl fmt::Display for Beater {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Beater::Control => f.write_str("control loop"),
            Beater::Worker(n) => write!(f, "worker {n}"),
        }
    }
}

/// One thread's last heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Beat {
    pub who: Beater,
    /// Milliseconds since the epoch of its last stamp; `None`: it has not
    /// stamped yet.
    pub at_ms: Option<u64>,
}

impl Beat {
    /// How long ago it stamped (0 if the stamp is newer than `now_ms`: it
    /// was written after the reader read the clock).
    pub fn age_ms(&self, now_ms: u64) -> Option<u64> {
        self.at_ms.map(|at| now_ms.saturating_sub(at))
    }
}

/// A thread that has not made progress for too long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stall {
    pub who: Beater,
    pub silent_ms: u64,
    pub limit_ms: u64,
}

impl fmt::Display for Stall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Milliseconds: "1.0 s (limit 1.0 s)" would hide that it is over.
        write!(
            f,
            "{}: no progress for {} ms (limit {} ms)",
            self.who, self.silent_ms, self.limit_ms
        )
    }
}

/// Judges heartbeats: a thread whose last stamp is more than the limit old
/// has stalled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Liveness {
    limit_ms: u64,
}

impl Liveness {
    /// Threads may go `stall` without a stamp.
    pub fn new(stall: Duration) -> Liveness {
        Liveness {
            limit_ms: u64::try_from(stall.as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// The limit.
    pub fn limit(&self) -> Duration {
        Duration::from_millis(self.limit_ms)
    }

    /// Every thread of `beats` that has stalled at `now_ms` (empty: live).
    pub fn judge(&self, now_ms: u64, beats: impl IntoIterator<Item = Beat>) -> Vec<Stall> {
        beats
            .into_iter()
            .filter_map(|b| {
                let silent_ms = b.age_ms(now_ms)?;
                (silent_ms > self.limit_ms).then_some(Stall {
                    who: b.who,
                    silent_ms,
                    limit_ms: self.limit_ms,
                })
            })
            .collect()
    }
}

/// What readiness depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadyFacts {
    /// The devices are open and the workers run.
    pub attached: bool,
    /// The first snapshot of the services has been published.
    pub published: bool,
    /// Kubernetes mode: the first list of Services and EndpointSlices is
    /// in (`None`: not in Kubernetes mode).
    pub kube_listed: Option<bool>,
    /// A stop signal came: the instance is handing over and draining.
    pub draining: bool,
}

/// Why an instance is not ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NotReady {
    NotAttached,
    NoSnapshot,
    KubeNotListed,
    Draining,
}

impl fmt::Display for NotReady {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NotReady::NotAttached => "not attached to the network yet",
            NotReady::NoSnapshot => "the first snapshot of the services is not published yet",
            NotReady::KubeNotListed => {
                "kubernetes: the first list of Services and EndpointSlices is not in yet"
            }
            NotReady::Draining => "draining: stopping after SIGTERM",
        })
    }
}

/// Every reason `f` is not ready (empty: ready).
pub fn readiness(f: &ReadyFacts) -> Vec<NotReady> {
    [
        (!f.attached, NotReady::NotAttached),
        (!f.published, NotReady::NoSnapshot),
        (f.kube_listed == Some(false), NotReady::KubeNotListed),
        (f.draining, NotReady::Draining),
    ]
    .into_iter()
    .filter_map(|(bad, why)| bad.then_some(why))
    .collect()
}

/// Decides when a watched file is read again, from its stamps (identity,
/// size, times: whatever the driver reads with `stat`; `S` is compared
/// only). The driver stats the file when [`FileWatch::due`] says so and
/// hands the stamp to [`FileWatch::handle_stamp`], which answers whether to
/// reload; every reload, by the watch or by a signal, reports the stamp it
/// read with [`FileWatch::handle_loaded`] (taken before reading, so a change
/// during the read is seen the next time).
///
/// A change is acted on once the stamp has stayed the same for one period:
/// a file being written in place (truncated, then written) is not read
/// half-way, while an atomic swap (the kubelet's `..data` symlink rename)
/// is read one period after it was seen. A file that failed to load is not
/// read again until it changes again.
#[derive(Debug, Clone)]
pub struct FileWatch<S> {
    period: Duration,
    next: Instant,
    /// The stamp of the file last read.
    loaded: S,
    /// A different stamp seen at the last look, waiting to settle.
    seen: Option<S>,
}

impl<S: PartialEq> FileWatch<S> {
    /// A watch of a file read at `now` as `loaded`, looking every `period`.
    pub fn new(period: Duration, now: Instant, loaded: S) -> FileWatch<S> {
        FileWatch {
            period,
            next: now + period,
            loaded,
            seen: None,
        }
    }

    /// Whether to stat the file now.
    pub fn due(&self, now: Instant) -> bool {
        now >= self.next
    }

    /// When the next look is due.
    pub fn poll_timeout(&self) -> Instant {
        self.next
    }

    /// The file's stamp at `now`: true if it is to be reloaded now.
    pub fn handle_stamp(&mut self, now: Instant, stamp: S) -> bool {
        self.next = now + self.period;
        if stamp == self.loaded {
            self.seen = None;
            return false;
        }
        if self.seen.as_ref() == Some(&stamp) {
            self.seen = None;
            return true;
        }
        self.seen = Some(stamp);
        false
    }

    /// The file was read (successfully or not) as `stamp`.
    pub fn handle_loaded(&mut self, stamp: S) {
        self.loaded = stamp;
        self.seen = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beat(who: Beater, at_ms: Option<u64>) -> Beat {
        Beat { who, at_ms }
    }

    #[test]
    fn a_thread_silent_past_the_limit_has_stalled() {
        let l = Liveness::new(Duration::from_secs(10));
        let beats = [
            beat(Beater::Control, Some(1_000)),
            beat(Beater::Worker(0), Some(5_000)),
            beat(Beater::Worker(1), Some(11_000)),
        ];
        // At 11 s: the control loop is 10 s silent, exactly the limit: live.
        assert!(l.judge(11_000, beats).is_empty());
        // At 11.001 s it has stalled; the workers have not.
        assert_eq!(
            l.judge(11_001, beats),
            vec![Stall {
                who: Beater::Control,
                silent_ms: 10_001,
                limit_ms: 10_000
            }]
        );
        // At 16 s worker 0 too, in the order given.
        let s = l.judge(16_000, beats);
        assert_eq!(
            s.iter().map(|s| s.who).collect::<Vec<_>>(),
            [Beater::Control, Beater::Worker(0)]
        );
        assert_eq!(
            s[1].to_string(),
            "worker 0: no progress for 11000 ms (limit 10000 ms)"
        );
    }

    #[test]
    fn threads_not_started_and_stamps_from_after_the_read_are_live() {
        let l = Liveness::new(Duration::from_secs(1));
        // Not stamped yet: not judged, however late.
        assert!(l
            .judge(1_000_000, [beat(Beater::Worker(3), None)])
            .is_empty());
        // A stamp newer than the reader's clock is 0 old, not a wrap.
        let b = beat(Beater::Control, Some(5_001));
        assert_eq!(b.age_ms(5_000), Some(0));
        assert!(l.judge(5_000, [b]).is_empty());
    }

    #[test]
    fn a_stamping_thread_stays_live_and_a_stopped_one_stalls_once_the_limit_passes() {
        // A simulated clock: the control loop stamps every 20 ms until it
        // wedges at 3 s; the judge runs every 100 ms.
        let l = Liveness::new(Duration::from_secs(2));
        let mut stamp = None;
        let mut first_stall = None;
        for t in (0..10_000u64).step_by(20) {
            if t <= 3_000 {
                stamp = Some(t);
            }
            if t % 100 == 0
                && first_stall.is_none()
                && !l.judge(t, [beat(Beater::Control, stamp)]).is_empty()
            {
                first_stall = Some(t);
            }
        }
        // Silent from 3.0 s; more than 2 s silent first at 5.1 s.
        assert_eq!(first_stall, Some(5_100));
    }

    #[test]
    fn readiness_lists_every_reason() {
        let ready = ReadyFacts {
            attached: true,
            published: true,
            kube_listed: None,
            draining: false,
        };
        assert!(readiness(&ready).is_empty());
        assert!(readiness(&ReadyFacts {
            kube_listed: Some(true),
            ..ready
        })
        .is_empty());
        assert_eq!(
            readiness(&ReadyFacts {
                kube_listed: Some(false),
                ..ready
            }),
            [NotReady::KubeNotListed]
        );
        assert_eq!(
            readiness(&ReadyFacts {
                attached: false,
                published: false,
                kube_listed: Some(false),
                draining: true,
            }),
            [
                NotReady::NotAttached,
                NotReady::NoSnapshot,
                NotReady::KubeNotListed,
                NotReady::Draining
            ]
        );
        assert_eq!(
            NotReady::Draining.to_string(),
            "draining: stopping after SIGTERM"
        );
    }

    const P: Duration = Duration::from_secs(1);

    #[test]
    fn file_watch_reloads_a_change_once_it_has_settled() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut w = FileWatch::new(P, t0, "a");
        assert!(!w.due(t0));
        assert!(w.due(at(1)));
        // Unchanged: nothing.
        assert!(!w.handle_stamp(at(1), "a"));
        assert_eq!(w.poll_timeout(), at(2));
        // Changed: seen once, then the same a period later: reload.
        assert!(!w.handle_stamp(at(2), "b"));
        assert!(w.handle_stamp(at(3), "b"));
        w.handle_loaded("b");
        assert!(!w.handle_stamp(at(4), "b"));
        // A file being written: each look sees another stamp; read once it
        // holds still.
        assert!(!w.handle_stamp(at(5), "c1"));
        assert!(!w.handle_stamp(at(6), "c2"));
        assert!(w.handle_stamp(at(7), "c2"));
        w.handle_loaded("c2");
        // Changed and changed back before it settled: nothing to read.
        assert!(!w.handle_stamp(at(8), "d"));
        assert!(!w.handle_stamp(at(9), "c2"));
        assert!(!w.handle_stamp(at(10), "c2"));
    }

    #[test]
    fn file_watch_leaves_a_file_a_signal_reloaded_and_a_bad_one_alone() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut w = FileWatch::new(P, t0, Some(1));
        // SIGHUP read the new file before the watch looked twice.
        assert!(!w.handle_stamp(at(1), Some(2)));
        w.handle_loaded(Some(2));
        assert!(!w.handle_stamp(at(2), Some(2)));
        // A file that failed to load (or is gone: None) is read once.
        assert!(!w.handle_stamp(at(3), None));
        assert!(w.handle_stamp(at(4), None));
        w.handle_loaded(None);
        for s in 5..10 {
            assert!(!w.handle_stamp(at(s), None));
        }
        // Back: read again.
        assert!(!w.handle_stamp(at(10), Some(3)));
        assert!(w.handle_stamp(at(11), Some(3)));
    }
}
