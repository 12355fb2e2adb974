//! Lease election (coordination.k8s.io/v1): for clusters where neither
//! multicast nor unicast VRRP gets through, the instance holding a Lease
//! is the active one.
//!
//! The rules follow Kubernetes' own leader election: the holder renews
//! every `retry`; another instance takes the Lease over only after it has
//! seen the same record, unrenewed, for a whole `duration` on its own
//! clock (so clock skew between nodes does not matter); every write carries
//! the resourceVersion it read, so of two racing instances one wins and the
//! other gets 409 Conflict. A holder that cannot renew for
//! `duration - retry` steps down (state fault) before anyone else can take
//! over, so two instances are never active at once as long as the clocks
//! run at the same rate. On a clean stop the holder releases the Lease
//! (empty holder), so a backup takes over within one `retry`.
//!
//! The decision for one step is the pure [`decide`]; [`run`] does the IO.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::Arc;
#[cfg(test)]
use std::time::Duration;
use std::time::{Instant, SystemTime};

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, PostParams};
use kube::Client;
use parking_lot::Mutex;
use serde_json::{json, Value};

use super::client::{Identity, REQUEST_TIMEOUT};
use crate::config::LeaseSettings;
use crate::metrics::Exposition;
use crate::status::{LeaseStatus, RouterState};
pub use podlb_core::k8s::lease::{decide, Record, Step};

/// State numbers as in VRRP's view: 0 initialize, 1 backup, 2 master, 3 fault.
pub const INIT: u8 = 0;
pub const BACKUP: u8 = 1;
pub const MASTER: u8 = 2;
pub const FAULT: u8 = 3;

/// What /status and /metrics show about the Lease.
#[derive(Default)]
pub struct LeaseView {
    pub state: AtomicU8,
    pub holder: Mutex<Option<String>>,
    pub acquired: AtomicU64,
    pub renewals: AtomicU64,
    pub errors: AtomicU64,
    pub conflicts: AtomicU64,
    pub last_error: Mutex<Option<String>>,
}

impl LeaseView {
    /// The `/status` section.
    pub fn status(&self) -> LeaseStatus {
        LeaseStatus {
            state: RouterState::from_index(self.state.load(Relaxed).min(3)),
            holder: self.holder.lock().clone(),
            acquired: self.acquired.load(Relaxed),
            errors: self.errors.load(Relaxed),
            last_error: self.last_error.lock().clone(),
        }
    }

    /// The `podlb_lease_*` families.
    pub fn render(&self, w: &mut Exposition) {
        w.gauge(
            "podlb_lease_state",
            "0 initialize, 1 backup, 2 holder, 3 fault.",
            self.state.load(Relaxed),
        );
        w.counter(
            "podlb_lease_acquired_total",
            "Times the Lease was acquired.",
            self.acquired.load(Relaxed),
        );
        w.counter(
            "podlb_lease_errors_total",
            "Failed Lease calls.",
            self.errors.load(Relaxed),
        );
        w.counter(
            "podlb_lease_conflicts_total",
            "Lease writes lost to another instance (409).",
            self.conflicts.load(Relaxed),
        );
    }
}

/// The API's `MicroTime`: RFC 3339 UTC with six fractional digits.
fn now_micro() -> String {
    let now = jiff::Timestamp::try_from(SystemTime::now()).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    format!("{now:.6}")
}

fn lease_body(
    s: &LeaseSettings,
    id: &Identity,
    holder: &str,
    acquire: bool,
    prev: Option<&Record>,
) -> Value {
    let now = now_micro();
    let transitions = prev.map_or(0, |p| p.transitions) + i64::from(acquire && prev.is_some());
    let mut spec = json!({
        "holderIdentity": holder,
        "leaseDurationSeconds": s.duration.as_millis().div_ceil(1000) as i64,
        "renewTime": now,
        "leaseTransitions": transitions,
    });
    match (acquire, prev.and_then(|p| p.acquire_time.clone())) {
        (true, _) => spec["acquireTime"] = json!(now),
        (false, Some(t)) => spec["acquireTime"] = json!(t),
        (false, None) => {}
    }
    let mut meta = json!({ "name": s.name, "namespace": id.namespace });
    if let Some(rv) = prev.and_then(|p| p.resource_version.clone()) {
        meta["resourceVersion"] = json!(rv);
    }
    json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": meta,
        "spec": spec,
    })
}

/// Runs the election until the task is dropped. `leader` is true while
/// this instance holds the Lease.
pub async fn run(
    client: Client,
    s: LeaseSettings,
    id: Identity,
    leader: Arc<AtomicBool>,
    view: Arc<LeaseView>,
) {
    let api: Api<Lease> = Api::namespaced(client, &id.namespace);
    let mut observed: Option<(Record, Instant)> = None;
    let mut last_renew: Option<Instant> = None;
    let set = |state: u8| {
        leader.store(state == MASTER, Relaxed);
        view.state.store(state, Relaxed);
    };
    set(INIT);
    loop {
        let now = Instant::now();
        let read = tokio::time::timeout(REQUEST_TIMEOUT, api.get_opt(&s.name)).await;
        let record = match read {
            Ok(Ok(l)) => Ok(l.map(|l| Record::of(&serde_json::to_value(l).unwrap_or_default()))),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".to_string()),
        };
        match record {
            Err(e) => failed(&view, &e),
            Ok(record) => {
                // Note when the record last changed, on our clock.
                let changed = match (&observed, &record) {
                    (Some((o, _)), Some(r)) => o.holder != r.holder || o.renew_time != r.renew_time,
                    _ => true,
                };
                if changed {
                    observed = record.clone().map(|r| (r, now));
                }
                *view.holder.lock() = record.as_ref().and_then(|r| r.holder.clone());
                let since = observed.as_ref().map_or(now, |o| o.1);
                let step = decide(record.as_ref(), &id.name, since, now, s.duration);
                let write = match step {
                    Step::Follow => None,
                    Step::Create => Some((false, true)),
                    Step::Renew => Some((true, false)),
                    Step::Acquire => Some((true, true)),
                };
                match write {
                    None => {
                        last_renew = None;
                        set(BACKUP);
                    }
                    Some((replace, acquire)) => {
                        let body = lease_body(&s, &id, &id.name, acquire, record.as_ref());
                        match put(&api, &s.name, replace, body).await {
                            Ok(()) => {
                                if step != Step::Renew {
                                    view.acquired.fetch_add(1, Relaxed);
                                    tracing::info!(lease = %s.name, "lease: acquired; active");
                                } else {
                                    view.renewals.fetch_add(1, Relaxed);
                                }
                                last_renew = Some(Instant::now());
                                *view.holder.lock() = Some(id.name.clone());
                                set(MASTER);
                            }
                            Err(PutError::Conflict) => {
                                // Someone else wrote first: follow them.
                                view.conflicts.fetch_add(1, Relaxed);
                                last_renew = None;
                                set(BACKUP);
                            }
                            Err(PutError::Other(e)) => failed(&view, &e),
                        }
                    }
                }
            }
        }
        // A holder that could not renew in time steps down before anyone
        // can take over (they wait a whole duration).
        if view.state.load(Relaxed) == MASTER
            && last_renew.is_none_or(|t| t.elapsed() + s.retry >= s.duration)
        {
            tracing::warn!(lease = %s.name, "lease: could not renew in time; stepping down");
            set(FAULT);
            last_renew = None;
        }
        tokio::time::sleep(s.retry).await;
    }
}

fn failed(view: &LeaseView, e: &str) {
    view.errors.fetch_add(1, Relaxed);
    tracing::warn!(error = %e, "lease: API call failed");
    *view.last_error.lock() = Some(e.to_string());
    // Not holding is not knowing: a backup stays backup, but one that never
    // read the Lease yet reports fault.
    if view.state.load(Relaxed) == INIT {
        view.state.store(FAULT, Relaxed);
    }
}

enum PutError {
    Conflict,
    Other(String),
}

async fn put(api: &Api<Lease>, name: &str, replace: bool, body: Value) -> Result<(), PutError> {
    let lease: Lease = serde_json::from_value(body).map_err(|e| PutError::Other(e.to_string()))?;
    let pp = PostParams::default();
    let res = if replace {
        tokio::time::timeout(REQUEST_TIMEOUT, api.replace(name, &pp, &lease)).await
    } else {
        tokio::time::timeout(REQUEST_TIMEOUT, api.create(&pp, &lease)).await
    };
    match res {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(kube::Error::Api(s))) if s.code == 409 => Err(PutError::Conflict),
        Ok(Err(e)) => Err(PutError::Other(e.to_string())),
        Err(_) => Err(PutError::Other("timed out".into())),
    }
}

/// Gives the Lease up on a clean stop (empty holder), if we hold it.
pub async fn release(client: Client, s: &LeaseSettings, id: &Identity) {
    let api: Api<Lease> = Api::namespaced(client, &id.namespace);
    let Ok(Ok(Some(l))) = tokio::time::timeout(REQUEST_TIMEOUT, api.get_opt(&s.name)).await else {
        return;
    };
    let r = Record::of(&serde_json::to_value(l).unwrap_or_default());
    if r.holder.as_deref() != Some(id.name.as_str()) {
        return;
    }
    let mut body = lease_body(s, id, "", false, Some(&r));
    body["spec"]["leaseDurationSeconds"] = json!(1);
    match put(&api, &s.name, true, body).await {
        Ok(()) => tracing::info!(lease = %s.name, "lease: released"),
        Err(_) => {
            tracing::warn!(lease = %s.name, "lease: release failed; the others wait for it to expire")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(holder: Option<&str>) -> Record {
        Record {
            holder: holder.map(str::to_string),
            renew_time: Some("2026-11-28T01:00:00.000000Z".into()),
            acquire_time: None,
            transitions: 3,
            resource_version: Some("7".into()),
        }
    }

    #[test]
    fn lease_bodies_carry_the_version_and_count_transitions() {
        let s = LeaseSettings {
            name: "podlb".into(),
            duration: Duration::from_millis(2500),
            retry: Duration::from_millis(500),
            garp_count: 3,
            sync_key: None,
            on_master: None,
            on_backup: None,
            on_fault: None,
        };
        let id = Identity {
            namespace: "podlb-system".into(),
            name: "podlb-a".into(),
            pod_ip: std::net::Ipv4Addr::new(198, 18, 0, 2),
            node: None,
        };
        let prev = rec(Some("podlb-b"));
        let b = lease_body(&s, &id, "podlb-a", true, Some(&prev));
        assert_eq!(b["metadata"]["resourceVersion"], "7");
        assert_eq!(b["spec"]["leaseTransitions"], 4);
        assert_eq!(b["spec"]["leaseDurationSeconds"], 3);
        assert!(b["spec"]["acquireTime"].is_string());
        let renew = lease_body(&s, &id, "podlb-a", false, Some(&rec(Some("podlb-a"))));
        assert_eq!(renew["spec"]["leaseTransitions"], 3);
        assert!(renew["spec"].get("acquireTime").is_none());
        let t = renew["spec"]["renewTime"].as_str().unwrap();
        assert_eq!(t.len(), "2026-11-28T01:00:00.000000Z".len(), "{t}");
        let first = lease_body(&s, &id, "podlb-a", true, None);
        assert_eq!(first["spec"]["leaseTransitions"], 0);
        assert!(first["metadata"].get("resourceVersion").is_none());
    }
}
