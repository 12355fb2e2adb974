//! The cloud address mover (`[cloud]`): on becoming master, make the cloud
//! send the VIP's traffic to this instance; on losing mastership, stop
//! claiming. See docs/cloud.md.
//!
//! The control loop only hands the mastership to [`CloudHandle::set_role`]
//! (a channel send); everything that can block — HTTP to the EC2 API,
//! starting the exec command — happens on the `podlb-cloud` thread, so
//! neither the data plane nor VRRP ever waits for the cloud. The decisions
//! are in the sans-IO [`mover::Mover`] and
//! [`podlb_core::cloud::credentials::CredentialCache`]. The VIPs to hold
//! follow the published snapshot ([`CloudHandle::set_vips`]): Kubernetes
//! pool VIPs are claimed like the static services' ones.

pub mod aws;
pub mod credentials;
pub mod http;
pub use podlb_core::cloud::mover;
pub mod sigv4;
pub mod xml;

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;

use crate::config::{CloudProvider, CloudSettings};
use crate::metrics::{Exposition, Kind};
use crate::redundancy::{spawn_notify, HookEvent};
use crate::status::{CloudStatus, RouterState};
use mover::{Mover, Note, Role, Targets, ACTIONS};

/// Rows of the calls counter: the four EC2 actions and the ENI lookup in
/// the instance metadata, then credential fetches and `exec`.
pub const CALL_ACTIONS: [&str; 7] = [
    ACTIONS[0],
    ACTIONS[1],
    ACTIONS[2],
    ACTIONS[3],
    ACTIONS[4],
    "Credentials",
    "exec",
];
const CREDENTIALS: usize = 5;
const EXEC: usize = 6;

/// What /status and /metrics show about the mover.
pub struct CloudView {
    pub provider: &'static str,
    /// The role last handed to the mover: 0 none yet, 1 backup, 2 master,
    /// 3 fault (as `redundancy::STATE_NAMES`).
    pub role: AtomicU8,
    /// The master's last claim or check found every address its own.
    pub owned: AtomicBool,
    /// Calls by action, `[ok, error]`.
    pub calls: [[AtomicU64; 2]; CALL_ACTIONS.len()],
    pub errors: AtomicU64,
    /// "<action> at <unix seconds>" of the last success.
    pub last_ok: Mutex<Option<String>>,
    /// The last error, with the API's Code and Message.
    pub last_error: Mutex<Option<String>>,
    /// Where the AWS credentials come from, and until when.
    pub credentials: Mutex<Option<String>>,
    /// The ENI claimed for (configured or found).
    pub eni: Mutex<Option<String>>,
}

impl CloudView {
    fn new(provider: &'static str) -> CloudView {
        CloudView {
            provider,
            role: AtomicU8::new(0),
            owned: AtomicBool::new(false),
            calls: Default::default(),
            errors: AtomicU64::new(0),
            last_ok: Mutex::new(None),
            last_error: Mutex::new(None),
            credentials: Mutex::new(None),
            eni: Mutex::new(None),
        }
    }

    fn record(&self, action: usize, result: Result<(), String>) {
        let now = unix_now();
        match result {
            Ok(()) => {
                self.calls[action][0].fetch_add(1, Relaxed);
                *self.last_ok.lock() = Some(format!("{} at {now}", CALL_ACTIONS[action]));
            }
            Err(e) => {
                self.calls[action][1].fetch_add(1, Relaxed);
                self.errors.fetch_add(1, Relaxed);
                *self.last_error.lock() = Some(format!("{}: {e}", CALL_ACTIONS[action]));
            }
        }
    }

    /// `claimed` (master, and the addresses are ours), `claiming` (master,
    /// not yet or not any more) or `released` (not master).
    pub fn state(&self) -> &'static str {
        match (self.role.load(Relaxed), self.owned.load(Relaxed)) {
            (2, true) => "claimed",
            (2, false) => "claiming",
            _ => "released",
        }
    }
}

impl CloudView {
    /// The `/status` section.
    pub fn status(&self) -> CloudStatus {
        let sum = |j: usize| self.calls.iter().map(|r| r[j].load(Relaxed)).sum::<u64>();
        CloudStatus {
            provider: self.provider.to_string(),
            role: RouterState::from_index(self.role.load(Relaxed) % 4),
            state: self.state().to_string(),
            calls: sum(0) + sum(1),
            errors: self.errors.load(Relaxed),
            last_ok: self.last_ok.lock().clone(),
            last_error: self.last_error.lock().clone(),
            credentials: self.credentials.lock().clone(),
            eni: self.eni.lock().clone(),
        }
    }

    /// The `podlb_cloud_*` families.
    pub fn render(&self, w: &mut Exposition) {
        let mut f = w.family(
            "podlb_cloud_calls_total",
            "Cloud API calls (exec: commands run), by action and result.",
            Kind::Counter,
        );
        for (action, calls) in CALL_ACTIONS.iter().zip(&self.calls) {
            for (result, n) in ["ok", "error"].iter().zip(calls) {
                f.sample(&[("action", action), ("result", result)], n.load(Relaxed));
            }
        }
        w.gauge(
            "podlb_cloud_owned",
            "1 while this instance is master and its last claim or check found the addresses its own.",
            u8::from(self.state() == "claimed"),
        );
    }
}

enum Msg {
    Role(Role),
    /// The VIPs of the published snapshot.
    Vips(Vec<Ipv4Addr>),
    Stop,
}

/// The engine's end: hands over the mastership, stops the thread.
pub struct CloudHandle {
    tx: mpsc::Sender<Msg>,
    last: Mutex<Option<Role>>,
    last_vips: Mutex<Vec<Ipv4Addr>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    pub view: Arc<CloudView>,
}

impl CloudHandle {
    /// Starts the `podlb-cloud` thread. `vips`: the static services' VIPs
    /// (the default private IPs, and `PODLB_VIP` for exec); `vrid`: for
    /// `PODLB_VRID` (empty without VRRP).
    pub fn start(
        s: &CloudSettings,
        vips: Vec<Ipv4Addr>,
        vrid: String,
    ) -> std::io::Result<CloudHandle> {
        CloudHandle::start_with(s, vips, vrid, credentials::process_env)
    }

    /// As [`CloudHandle::start`], with the AWS settings of the environment
    /// (credential source, STS and IMDS endpoints) looked up in `env`.
    pub fn start_with(
        s: &CloudSettings,
        vips: Vec<Ipv4Addr>,
        vrid: String,
        env: impl Fn(&str) -> Option<String>,
    ) -> std::io::Result<CloudHandle> {
        let view = Arc::new(CloudView::new(s.provider.name()));
        let (tx, rx) = mpsc::channel();
        let worker: Box<dyn FnOnce() + Send> = match &s.provider {
            CloudProvider::Aws(a) => {
                let follow_vips = a.private_ip.is_none();
                let ips = match a.private_ip {
                    Some(ip) => vec![ip],
                    None => vips.clone(),
                };
                let provider = credentials::Provider::from_env(&a.region, &env)
                    .map_err(std::io::Error::other)?;
                let client = aws::AwsClient {
                    endpoint: http::Endpoint::parse(&a.endpoint_url)
                        .map_err(std::io::Error::other)?,
                    region: a.region.clone(),
                    imds: credentials::Imds::from_env(&env).map_err(std::io::Error::other)?,
                    credentials: credentials::CredentialCache::new(Instant::now()),
                    target: aws::AwsTarget {
                        network_interface_id: a.network_interface_id.clone(),
                        allocation_id: a.allocation_id.clone(),
                        associate_private_ip: a.private_ip,
                    },
                    provider,
                };
                let targets = Targets {
                    eni: a.network_interface_id.clone(),
                    eip: a.allocation_id.is_some(),
                    ips,
                };
                *view.eni.lock() = targets.eni.clone();
                tracing::info!(
                    endpoint = %a.endpoint_url,
                    eni = targets.eni.as_deref().unwrap_or("(from the instance metadata)"),
                    allocation_id = ?a.allocation_id,
                    private_ips = ?targets.ips,
                    credentials = client.provider.source.name(),
                    "cloud: aws mover"
                );
                let (v, interval) = (view.clone(), s.reconcile_interval);
                Box::new(move || {
                    AwsLoop {
                        rx,
                        client,
                        follow_vips,
                        view: v,
                    }
                    .run(Mover::new(targets, interval, Instant::now()))
                })
            }
            CloudProvider::Exec { command } => {
                let (v, command) = (view.clone(), command.clone());
                let vips = join(&vips);
                Box::new(move || run_exec(rx, command, vips, vrid, v))
            }
        };
        let thread = std::thread::Builder::new()
            .name("podlb-cloud".into())
            .spawn(worker)?;
        let mut vips = vips;
        vips.sort_unstable();
        vips.dedup();
        Ok(CloudHandle {
            tx,
            last: Mutex::new(None),
            // (As set_vips keeps them: the first snapshot's same VIPs are no change.)
            last_vips: Mutex::new(vips),
            thread: Mutex::new(Some(thread)),
            view,
        })
    }

    /// The VIPs served now (each published snapshot's; repeats are
    /// ignored). Never blocks.
    pub fn set_vips(&self, mut vips: Vec<Ipv4Addr>) {
        vips.sort_unstable();
        vips.dedup();
        let mut last = self.last_vips.lock();
        if *last == vips {
            return;
        }
        last.clone_from(&vips);
        let _ = self.tx.send(Msg::Vips(vips));
    }

    /// The mastership changed (repeats are ignored). Never blocks.
    pub fn set_role(&self, role: Role) {
        let mut last = self.last.lock();
        if *last == Some(role) {
            return;
        }
        *last = Some(role);
        self.view.role.store(
            match role {
                Role::Backup => 1,
                Role::Master => 2,
                Role::Fault => 3,
            },
            Relaxed,
        );
        if role != Role::Master {
            self.view.owned.store(false, Relaxed);
        }
        let _ = self.tx.send(Msg::Role(role));
    }

    /// Stops the thread; waits at most `wait` for it (a call on the wire
    /// is bounded by its own timeout, but shutdown need not wait for it).
    pub fn stop(&self, wait: Duration) {
        let _ = self.tx.send(Msg::Stop);
        let Some(h) = self.thread.lock().take() else {
            return;
        };
        let until = Instant::now() + wait;
        while !h.is_finished() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        if h.is_finished() {
            let _ = h.join();
        } else {
            tracing::warn!("cloud: a call is still in flight at shutdown; not waiting for it");
        }
    }
}

fn join(vips: &[Ipv4Addr]) -> String {
    vips.iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn set_role(m: &mut Mover, r: Role, view: &CloudView) {
    if r != m.role() {
        tracing::info!(
            role = r.as_str(),
            "cloud: {}",
            if r == Role::Master {
                "claiming the addresses"
            } else {
                "not claiming"
            }
        );
    }
    m.set_role(r, Instant::now());
    view.owned.store(m.owned(), Relaxed);
}

/// The `podlb-cloud` thread of `provider = "aws"`.
struct AwsLoop {
    rx: mpsc::Receiver<Msg>,
    client: aws::AwsClient,
    /// Hold the snapshot's VIPs (no `private_ip` configured).
    follow_vips: bool,
    view: Arc<CloudView>,
}

impl AwsLoop {
    /// Applies a message; false once told to stop.
    fn handle(&mut self, m: &mut Mover, msg: Msg) -> bool {
        match msg {
            Msg::Role(r) => set_role(m, r, &self.view),
            Msg::Vips(v) if self.follow_vips => {
                if v != m.ips() {
                    tracing::info!(private_ips = ?v, "cloud: the VIPs to hold changed");
                }
                m.set_ips(v, Instant::now());
                self.view.owned.store(m.owned(), Relaxed);
            }
            Msg::Vips(_) => {}
            Msg::Stop => return false,
        }
        true
    }

    /// Reads every queued message into the mover; false once told to stop.
    fn drain(&mut self, m: &mut Mover) -> bool {
        loop {
            match self.rx.try_recv() {
                Ok(msg) => {
                    if !self.handle(m, msg) {
                        return false;
                    }
                }
                Err(mpsc::TryRecvError::Disconnected) => return false,
                Err(mpsc::TryRecvError::Empty) => return true,
            }
        }
    }

    /// Fetches credentials, counted and logged.
    fn refresh(&mut self) {
        let source = self.client.provider.source.name();
        match self.client.fetch_credentials() {
            Ok(valid_for) => {
                self.view.record(CREDENTIALS, Ok(()));
                let until = match valid_for {
                    None => "static".to_string(),
                    Some(d) => format!("expires at {}", unix_now().saturating_add(d.as_secs())),
                };
                tracing::info!(source, ?valid_for, "cloud: AWS credentials fetched");
                *self.view.credentials.lock() = Some(format!("{source}, {until}"));
            }
            Err(e) => {
                self.view.record(CREDENTIALS, Err(e.to_string()));
                tracing::warn!(source, code = %e.code, message = %e.message, "cloud: fetching AWS credentials failed");
            }
        }
    }

    fn run(mut self, mut m: Mover) {
        loop {
            if !self.drain(&mut m) {
                return;
            }
            // Credentials are kept fresh in every role, so a new master
            // signs at once with credentials that are not about to expire.
            let mut fetched = false;
            if self.client.credentials.due(Instant::now()) {
                self.refresh();
                fetched = true;
            }
            if let Some(t) = m.poll(Instant::now()) {
                // The newest mastership decides whether this still goes out.
                if !self.drain(&mut m) {
                    return;
                }
                if !m.may_send(&t) {
                    tracing::info!(
                        action = t.call.action(),
                        "cloud: mastership lost; claim not sent"
                    );
                    m.cancel(t);
                    continue;
                }
                let needs_creds = t.call != mover::Call::FindInterface;
                if needs_creds
                    && !fetched
                    && self.client.credentials.usable(Instant::now()).is_none()
                {
                    // Inside the credentials' back-off too: the mover backs
                    // the call off.
                    self.refresh();
                }
                self.call(&mut m, t);
                continue;
            }
            let now = Instant::now();
            let wait = [m.next_deadline(), self.client.credentials.next_deadline()]
                .into_iter()
                .flatten()
                .min()
                .map_or(Duration::from_secs(3600), |d| {
                    d.saturating_duration_since(now)
                });
            match self.rx.recv_timeout(wait) {
                Ok(msg) => {
                    if !self.handle(&mut m, msg) {
                        return;
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return,
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
    }

    fn call(&mut self, m: &mut Mover, t: mover::Ticket) {
        let result = self.client.call(&t.call);
        let view = &self.view;
        view.record(
            t.call.index(),
            result.as_ref().map(|_| ()).map_err(|e| e.to_string()),
        );
        let err = result.as_ref().err().cloned();
        let call = t.call.clone();
        match m.on_result(t, result, Instant::now()) {
            Note::Progress | Note::Verified => {}
            Note::Claimed => tracing::info!("cloud: addresses claimed"),
            Note::Interface(eni) => {
                tracing::info!(%eni, "cloud: this instance's ENI (instance metadata)");
                self.client.target.network_interface_id = Some(eni.clone());
                *view.eni.lock() = Some(eni);
            }
            Note::Lost(why) => {
                tracing::warn!(%why, "cloud: address taken by someone else; claiming it back")
            }
            Note::Failed { retry_in } => {
                let e = err.unwrap_or(mover::ApiError {
                    code: "?".into(),
                    message: String::new(),
                });
                tracing::warn!(action = call.action(), code = %e.code, message = %e.message, ?retry_in, "cloud: API call failed");
            }
            Note::Stale => {
                tracing::info!(
                    action = call.action(),
                    "cloud: answer after the mastership changed; ignored, not retried"
                )
            }
        }
        view.owned.store(m.owned(), Relaxed);
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `provider = "exec"`: the command runs on every transition.
fn run_exec(
    rx: mpsc::Receiver<Msg>,
    command: Vec<String>,
    vips: String,
    vrid: String,
    view: Arc<CloudView>,
) {
    let mut vips = vips;
    let mut last: Option<Role> = None;
    loop {
        let r = match rx.recv() {
            Ok(Msg::Role(r)) => r,
            // The next run gets the VIPs served then.
            Ok(Msg::Vips(v)) => {
                vips = join(&v);
                continue;
            }
            Ok(Msg::Stop) | Err(_) => return,
        };
        if last == Some(r) {
            continue;
        }
        last = Some(r);
        let v = view.clone();
        spawn_notify(
            &command,
            r.as_str(),
            &vips,
            &vrid,
            "cloud command",
            move |ev| match ev {
                HookEvent::Started => {}
                HookEvent::Succeeded => v.record(EXEC, Ok(())),
                HookEvent::Failed => {
                    v.record(EXEC, Err("failed to start or exited non-zero".into()))
                }
            },
        );
        // The command's outcome is not known; "owned" is what it was told.
        view.owned.store(r == Role::Master, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec(command: Vec<String>) -> CloudHandle {
        let s = CloudSettings {
            provider: CloudProvider::Exec { command },
            reconcile_interval: Duration::from_secs(5),
        };
        let vips = vec![
            Ipv4Addr::new(198, 18, 0, 100),
            Ipv4Addr::new(198, 18, 0, 101),
        ];
        CloudHandle::start(&s, vips, "51".into()).unwrap()
    }

    /// Polls (bounded) until `f` holds.
    fn wait_for(what: &str, f: impl Fn() -> bool) {
        let t0 = Instant::now();
        while !f() {
            assert!(t0.elapsed() < Duration::from_secs(10), "{what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn exec_runs_the_command_on_each_transition_with_the_environment() {
        let dir = std::env::temp_dir().join(format!("podlb-cloud-exec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("out");
        let script = format!(
            "echo \"$PODLB_STATE $PODLB_VIP $PODLB_VRID ${{HOME:-nohome}} $0\" >> {}",
            out.display()
        );
        let h = exec(vec!["/bin/sh".into(), "-c".into(), script, "arg1".into()]);
        h.set_role(Role::Master);
        h.set_role(Role::Master); // a repeat runs nothing
        let read = || std::fs::read_to_string(&out).unwrap_or_default();
        wait_for("master run", || read().lines().count() == 1);
        h.set_role(Role::Fault);
        wait_for("fault run", || read().lines().count() == 2);
        wait_for("counted", || h.view.calls[EXEC][0].load(Relaxed) == 2);
        assert_eq!(
            read(),
            "master 198.18.0.100,198.18.0.101 51 nohome arg1\nfault 198.18.0.100,198.18.0.101 51 nohome arg1\n"
        );
        assert_eq!(h.view.state(), "released");
        h.stop(Duration::from_secs(2));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The VIPs of a later snapshot (Kubernetes pool VIPs) reach the next
    /// run's `PODLB_VIP`.
    #[test]
    fn exec_gets_the_vips_served_now() {
        let dir = std::env::temp_dir().join(format!("podlb-cloud-vips-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("out");
        let script = format!("echo \"$PODLB_STATE $PODLB_VIP\" >> {}", out.display());
        let h = exec(vec!["/bin/sh".into(), "-c".into(), script]);
        let read = || std::fs::read_to_string(&out).unwrap_or_default();
        h.set_role(Role::Backup);
        wait_for("backup run", || read().lines().count() == 1);
        // The same set in another order is no change.
        h.set_vips(vec![
            Ipv4Addr::new(198, 18, 0, 101),
            Ipv4Addr::new(198, 18, 0, 100),
        ]);
        h.set_vips(vec![
            Ipv4Addr::new(198, 18, 0, 102),
            Ipv4Addr::new(198, 18, 0, 100),
        ]);
        h.set_role(Role::Master);
        wait_for("master run", || read().lines().count() == 2);
        assert_eq!(
            read(),
            "backup 198.18.0.100,198.18.0.101\nmaster 198.18.0.100,198.18.0.102\n"
        );
        h.stop(Duration::from_secs(2));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn exec_failures_are_counted() {
        let h = exec(vec!["/bin/false".into()]);
        h.set_role(Role::Master);
        wait_for("failure counted", || h.view.errors.load(Relaxed) == 1);
        assert_eq!(h.view.calls[EXEC][1].load(Relaxed), 1);
        assert!(h
            .view
            .last_error
            .lock()
            .as_deref()
            .unwrap()
            .starts_with("exec: "));
        let h2 = exec(vec!["/nonexistent/move-vip".into()]);
        h2.set_role(Role::Backup);
        wait_for("start failure counted", || {
            h2.view.errors.load(Relaxed) == 1
        });
        h.stop(Duration::from_secs(2));
        h2.stop(Duration::from_secs(2));
    }

    /// A backup with an unreachable endpoint makes no call at all.
    #[test]
    fn aws_backup_calls_nothing() {
        let s = CloudSettings {
            provider: CloudProvider::Aws(crate::config::AwsSettings {
                endpoint_url: "http://127.0.0.1:9".into(),
                region: "us-east-1".into(),
                network_interface_id: Some("eni-1".into()),
                allocation_id: Some("eipalloc-1".into()),
                private_ip: None,
            }),
            reconcile_interval: Duration::from_millis(500),
        };
        let env = |k: &str| match k {
            "AWS_ACCESS_KEY_ID" => Some("AKID".to_string()),
            "AWS_SECRET_ACCESS_KEY" => Some("secret".to_string()),
            _ => None,
        };
        let h = CloudHandle::start_with(&s, vec![Ipv4Addr::new(10, 0, 0, 1)], String::new(), env)
            .unwrap();
        h.set_role(Role::Backup);
        std::thread::sleep(Duration::from_millis(300));
        // The credentials are read (once: static), no EC2 call is made.
        let ec2: u64 = h.view.calls[..CREDENTIALS]
            .iter()
            .flatten()
            .map(|c| c.load(Relaxed))
            .sum();
        assert_eq!(ec2, 0);
        assert_eq!(h.view.calls[CREDENTIALS][0].load(Relaxed), 1);
        assert_eq!(
            h.view.credentials.lock().as_deref(),
            Some("environment, static")
        );
        // As master it tries (and fails: nothing listens on port 9).
        h.set_role(Role::Master);
        wait_for("a failed claim", || h.view.errors.load(Relaxed) >= 1);
        assert_eq!(h.view.state(), "claiming");
        h.stop(Duration::from_secs(6));
    }
}
