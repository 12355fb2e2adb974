//! The Lease election's decision (coordination.k8s.io/v1), sans-IO: what
//! one instance does after reading the Lease. The rules follow Kubernetes'
//! own leader election (see `podlb::k8s::lease` for the IO and the
//! guarantees).

use std::time::{Duration, Instant};

use serde_json::Value;

/// The Lease as last read: who holds it and the fields that change on
/// every renewal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub holder: Option<String>,
    pub renew_time: Option<String>,
    pub acquire_time: Option<String>,
    pub transitions: i64,
    pub resource_version: Option<String>,
}

impl Record {
    /// Reads the record out of a Lease object as the API server returns it.
    pub fn of(l: &Value) -> Record {
        let s = |p: &str| l.pointer(p).and_then(Value::as_str).map(str::to_string);
        Record {
            holder: s("/spec/holderIdentity").filter(|h| !h.is_empty()),
            renew_time: s("/spec/renewTime"),
            acquire_time: s("/spec/acquireTime"),
            transitions: l
                .pointer("/spec/leaseTransitions")
                .and_then(Value::as_i64)
                .unwrap_or(0),
            resource_version: s("/metadata/resourceVersion"),
        }
    }
}

/// What to do after reading the Lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Create it (it does not exist).
    Create,
    /// We hold it: renew.
    Renew,
    /// Free or expired: take it over.
    Acquire,
    /// Someone else holds it and is renewing.
    Follow,
}

/// Decides one step. `observed` is when this instance first saw the record
/// it now reads unchanged (holder and renew time).
pub fn decide(
    record: Option<&Record>,
    me: &str,
    observed: Instant,
    now: Instant,
    duration: Duration,
) -> Step {
    match record {
        None => Step::Create,
        Some(r) if r.holder.as_deref() == Some(me) => Step::Renew,
        Some(r) if r.holder.is_none() => Step::Acquire,
        Some(_) if now.saturating_duration_since(observed) >= duration => Step::Acquire,
        Some(_) => Step::Follow,
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
    fn decide_follows_the_leader_election_rules() {
        let d = Duration::from_secs(4);
        let t0 = Instant::now();
        assert_eq!(decide(None, "a", t0, t0, d), Step::Create);
        assert_eq!(decide(Some(&rec(Some("a"))), "a", t0, t0, d), Step::Renew);
        assert_eq!(decide(Some(&rec(None)), "a", t0, t0, d), Step::Acquire);
        // Held by b: follow until the record stood still for a duration.
        let b = rec(Some("b"));
        assert_eq!(decide(Some(&b), "a", t0, t0 + d / 2, d), Step::Follow);
        assert_eq!(decide(Some(&b), "a", t0, t0 + d, d), Step::Acquire);
    }
}
