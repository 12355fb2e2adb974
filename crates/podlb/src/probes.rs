//! The engine's side of the probes (`/livez`, `/readyz`): the heartbeat
//! slots the control loop and the workers stamp, and what the admin
//! endpoint reads from them. The judgement is
//! [`podlb_core::control::probes`]'s.
//!
//! A stamp is one relaxed store of "milliseconds since the engine's epoch,
//! plus one" (0: not stamped yet) into the thread's own cache line: a worker
//! stamps once a poll iteration (a batch of frames, or an idle wait of at
//! most 100 ms), the control loop once a pass (at least every 20 ms).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use crossbeam_utils::CachePadded;

use podlb_core::control::probes::{Beat, Beater};

/// One thread's heartbeat.
#[derive(Debug, Default)]
pub struct Heartbeat(CachePadded<AtomicU64>);

impl Heartbeat {
    /// The thread made progress at `at`.
    #[inline]
    pub fn stamp(&self, epoch: Instant, at: Instant) {
        let ms = u64::try_from(at.saturating_duration_since(epoch).as_millis()).unwrap_or(u64::MAX);
        self.0.store(ms.saturating_add(1), Relaxed);
    }

    /// Milliseconds since the epoch of the last stamp.
    pub fn last_ms(&self) -> Option<u64> {
        self.0.load(Relaxed).checked_sub(1)
    }
}

/// The heartbeats of the control loop and of each worker.
#[derive(Debug)]
pub struct Heartbeats {
    pub control: Heartbeat,
    workers: Box<[Heartbeat]>,
}

impl Heartbeats {
    pub fn new(workers: usize) -> Heartbeats {
        Heartbeats {
            control: Heartbeat::default(),
            workers: (0..workers).map(|_| Heartbeat::default()).collect(),
        }
    }

    /// Worker `i`'s heartbeat (none past the configured count).
    pub fn worker(&self, i: usize) -> Option<&Heartbeat> {
        self.workers.get(i)
    }

    /// Every thread's last beat.
    pub fn beats(&self) -> Vec<Beat> {
        std::iter::once(Beat {
            who: Beater::Control,
            at_ms: self.control.last_ms(),
        })
        .chain(self.workers.iter().enumerate().map(|(i, h)| Beat {
            who: Beater::Worker(i),
            at_ms: h.last_ms(),
        }))
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn stamps_read_back_as_beats() {
        let epoch = Instant::now();
        let h = Heartbeats::new(2);
        assert!(h.beats().iter().all(|b| b.at_ms.is_none()));
        // A stamp at the epoch itself is 0 ms, not "never".
        h.control.stamp(epoch, epoch);
        h.worker(1)
            .unwrap()
            .stamp(epoch, epoch + Duration::from_millis(1500));
        assert!(h.worker(2).is_none());
        assert_eq!(
            h.beats(),
            [
                Beat {
                    who: Beater::Control,
                    at_ms: Some(0)
                },
                Beat {
                    who: Beater::Worker(0),
                    at_ms: None
                },
                Beat {
                    who: Beater::Worker(1),
                    at_ms: Some(1500)
                },
            ]
        );
    }
}
