//! The sans-IO core of the cloud address mover: what to ask the cloud API
//! next, given the mastership, the clock and the answers so far.
//!
//! Inputs: [`Mover::set_role`] (mastership changes), [`Mover::on_result`]
//! (API answers) and the clock (`now` on every call). Output: the next
//! call to make ([`Mover::poll`]) and when to ask again
//! ([`Mover::next_deadline`]). The IO thread does the HTTP.
//!
//! Rules:
//! - Only a master claims. A backup (or fault) never gets a call out of
//!   `poll`, and a claim issued under an earlier mastership is neither
//!   continued nor retried: its answer is stale ([`Note::Stale`]). The IO
//!   thread also asks [`Mover::may_send`] right before sending, after
//!   reading the newest mastership, so a claim is not sent by an instance
//!   that has just lost it (the late-claim race keepalived closed with
//!   `notify_master_rx_lower_pri`).
//! - On becoming master: claim everything at once (the Elastic IP's
//!   association, each secondary private IP), then check ownership every
//!   `interval`; if another instance took something, claim again.
//! - An error (credentials, API error, network) is retried after a back-off
//!   that doubles from [`BACKOFF_MIN`] to [`BACKOFF_MAX`]; any success
//!   resets it.
//! - Without a configured ENI, the first call (in any role, so a backup is
//!   ready to claim at once) asks the instance metadata for this
//!   instance's ENI ([`Call::FindInterface`]); no claim or check goes out
//!   before it is known.
//! - The private IPs to hold may change while running (Kubernetes
//!   allocates pool VIPs; a reload changes the services:
//!   [`Mover::set_ips`]). A master claims again as soon as one is added,
//!   unless it is backing off after an error (the retry claims everything);
//!   a removed IP is only no longer checked (nothing is released).

use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// First retry delay after an error.
pub const BACKOFF_MIN: Duration = Duration::from_millis(500);
/// Longest retry delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// The back-off after `d`: twice as long, at most [`BACKOFF_MAX`].
pub fn doubled(d: Duration) -> Duration {
    (d * 2).min(BACKOFF_MAX)
}

/// Mastership as the engine reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Master,
    Backup,
    Fault,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Master => "master",
            Role::Backup => "backup",
            Role::Fault => "fault",
        }
    }
}

/// One API call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// Claim: `AssignPrivateIpAddresses` of this IP to our ENI,
    /// `AllowReassignment=true`.
    AssignPrivateIp(Ipv4Addr),
    /// Claim: `AssociateAddress` of the Elastic IP with our ENI,
    /// `AllowReassociation=true`.
    AssociateAddress,
    /// Check: where the Elastic IP is associated.
    DescribeAddresses,
    /// Check: which private IPs our ENI has.
    DescribeNetworkInterfaces,
    /// This instance's ENI from the instance metadata (`mac`, then
    /// `network/interfaces/macs/<mac>/interface-id`).
    FindInterface,
}

/// The API action names, in the order of the metrics' `action` label.
pub const ACTIONS: [&str; 5] = [
    "AssignPrivateIpAddresses",
    "AssociateAddress",
    "DescribeAddresses",
    "DescribeNetworkInterfaces",
    "InstanceMetadata",
];

impl Call {
    pub fn action(&self) -> &'static str {
        ACTIONS[self.index()]
    }
    pub fn index(&self) -> usize {
        match self {
            Call::AssignPrivateIp(_) => 0,
            Call::AssociateAddress => 1,
            Call::DescribeAddresses => 2,
            Call::DescribeNetworkInterfaces => 3,
            Call::FindInterface => 4,
        }
    }
    /// Whether the call changes where the address goes (only a master may
    /// send it).
    pub fn is_claim(&self) -> bool {
        matches!(self, Call::AssignPrivateIp(_) | Call::AssociateAddress)
    }
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A claim was accepted.
    Done,
    /// `DescribeAddresses`: the ENI the Elastic IP is associated with.
    EipOwner(Option<String>),
    /// `DescribeNetworkInterfaces`: the private IPs on our ENI.
    Ips(Vec<Ipv4Addr>),
    /// `FindInterface`: this instance's ENI.
    Interface(String),
}

/// A failed call: the API's error code and message, or a transport error
/// (code `Transport`) or an unexpected answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: String,
    pub message: String,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// What the mover should claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Targets {
    /// This instance's ENI; `None`: find it from the instance metadata.
    pub eni: Option<String>,
    /// Move an Elastic IP (its allocation id is the client's business).
    pub eip: bool,
    /// Secondary private IPs to hold on the ENI.
    pub ips: Vec<Ipv4Addr>,
}

/// A call handed out by [`Mover::poll`]; give it back to
/// [`Mover::on_result`] (or [`Mover::cancel`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    pub call: Call,
    epoch: u64,
}

/// What an answer meant, for the log and /status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// Nothing to report (a step of a claim or a check).
    Progress,
    /// Every claim call of a round succeeded.
    Claimed,
    /// A check found everything ours.
    Verified,
    /// A check found something taken away; claiming again now.
    Lost(String),
    /// The call failed; retrying after `retry_in`.
    Failed { retry_in: Duration },
    /// This instance's ENI was found.
    Interface(String),
    /// The answer belongs to an earlier mastership: ignored, not retried.
    Stale,
}

pub struct Mover {
    targets: Targets,
    interval: Duration,
    role: Role,
    /// Bumped on every role change; tickets carry it.
    epoch: u64,
    plan: VecDeque<Call>,
    in_flight: bool,
    need_claim: bool,
    /// Bumped when the IPs to hold change; a round planned under an older
    /// one does not count as a claim of the new set.
    targets_gen: u64,
    round_gen: u64,
    next_at: Instant,
    backoff: Duration,
    owned: bool,
}

impl Mover {
    /// A mover that starts as backup (it claims nothing until told it is
    /// master).
    pub fn new(targets: Targets, interval: Duration, now: Instant) -> Mover {
        Mover {
            targets,
            interval,
            role: Role::Backup,
            epoch: 0,
            plan: VecDeque::new(),
            in_flight: false,
            need_claim: false,
            targets_gen: 0,
            round_gen: 0,
            next_at: now,
            backoff: BACKOFF_MIN,
            owned: false,
        }
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// This instance's ENI, once known.
    pub fn eni(&self) -> Option<&str> {
        self.targets.eni.as_deref()
    }

    /// The secondary private IPs held now.
    pub fn ips(&self) -> &[Ipv4Addr] {
        &self.targets.ips
    }

    /// The private IPs to hold from now on. An added one makes a master
    /// claim at once (after the call in flight), unless it is backing off.
    pub fn set_ips(&mut self, ips: Vec<Ipv4Addr>, now: Instant) {
        if ips == self.targets.ips {
            return;
        }
        let added = ips.iter().any(|ip| !self.targets.ips.contains(ip));
        self.targets.ips = ips;
        self.targets_gen += 1;
        if !added || self.role != Role::Master {
            return;
        }
        self.plan.clear();
        self.owned = false;
        self.need_claim = true;
        if self.backoff == BACKOFF_MIN {
            // Not backing off (the last answer was a success).
            self.next_at = self.next_at.min(now);
        }
    }

    /// Whether the last claim or check found everything ours (and we are
    /// still master).
    pub fn owned(&self) -> bool {
        self.owned && self.role == Role::Master
    }

    pub fn set_role(&mut self, role: Role, now: Instant) {
        if role == self.role {
            return;
        }
        self.role = role;
        self.epoch += 1;
        self.plan.clear();
        self.owned = false;
        self.backoff = BACKOFF_MIN;
        self.need_claim = role == Role::Master;
        self.next_at = now;
    }

    /// The next call to make now, if any.
    pub fn poll(&mut self, now: Instant) -> Option<Ticket> {
        if self.in_flight {
            return None;
        }
        if self.targets.eni.is_none() {
            if now < self.next_at {
                return None;
            }
            self.in_flight = true;
            return Some(Ticket {
                call: Call::FindInterface,
                epoch: self.epoch,
            });
        }
        if self.role != Role::Master {
            return None;
        }
        if self.plan.is_empty() {
            if now < self.next_at {
                return None;
            }
            self.round_gen = self.targets_gen;
            self.plan = if self.need_claim {
                self.claim_calls()
            } else {
                self.check_calls()
            };
            if self.plan.is_empty() {
                // Nothing to move.
                self.owned = true;
                self.need_claim = false;
                self.next_at = now + self.interval;
                return None;
            }
        }
        let call = self.plan.pop_front()?;
        self.in_flight = true;
        Some(Ticket {
            call,
            epoch: self.epoch,
        })
    }

    /// Whether `t` may still be sent: issued under the current mastership,
    /// and, for a claim, we are still master. Ask right before sending,
    /// after feeding the newest role to [`Mover::set_role`].
    pub fn may_send(&self, t: &Ticket) -> bool {
        t.epoch == self.epoch && (self.role == Role::Master || !t.call.is_claim())
    }

    /// `t` was not sent (see [`Mover::may_send`]).
    pub fn cancel(&mut self, _t: Ticket) {
        self.in_flight = false;
    }

    /// When [`Mover::poll`] will next have something (None: not before a
    /// role change or an answer).
    pub fn next_deadline(&self) -> Option<Instant> {
        // (Mid-round, `next_at` is already past: the rest goes out at once.)
        let busy = self.role == Role::Master || self.targets.eni.is_none();
        (busy && !self.in_flight).then_some(self.next_at)
    }

    /// The answer to `t`.
    pub fn on_result(
        &mut self,
        t: Ticket,
        result: Result<Outcome, ApiError>,
        now: Instant,
    ) -> Note {
        self.in_flight = false;
        if t.call == Call::FindInterface {
            // Not a claim: its answer holds whatever the role now.
            return self.on_interface(result, now);
        }
        if t.epoch != self.epoch || self.role != Role::Master {
            return Note::Stale;
        }
        let outcome = match result {
            Ok(o) => o,
            Err(_) => {
                self.plan.clear();
                self.owned = false;
                if t.call.is_claim() {
                    self.need_claim = true;
                }
                return self.back_off(now);
            }
        };
        let lost = match (&t.call, outcome) {
            (Call::DescribeAddresses, Outcome::EipOwner(owner)) => {
                (owner.as_deref() != self.targets.eni.as_deref()).then(|| {
                    format!(
                        "Elastic IP associated with {}",
                        owner.as_deref().unwrap_or("nothing")
                    )
                })
            }
            (Call::DescribeNetworkInterfaces, Outcome::Ips(have)) => {
                let missing: Vec<String> = self
                    .targets
                    .ips
                    .iter()
                    .filter(|ip| !have.contains(ip))
                    .map(|ip| ip.to_string())
                    .collect();
                (!missing.is_empty()).then(|| {
                    format!(
                        "{} not on {}",
                        missing.join(","),
                        self.targets.eni.as_deref().unwrap_or("?")
                    )
                })
            }
            _ => None,
        };
        self.backoff = BACKOFF_MIN;
        if let Some(why) = lost {
            self.plan.clear();
            self.owned = false;
            self.need_claim = true;
            self.next_at = now;
            return Note::Lost(why);
        }
        if !self.plan.is_empty() {
            return Note::Progress;
        }
        if self.round_gen != self.targets_gen && self.need_claim {
            // The IPs changed during this round: claim the new set now.
            self.next_at = now;
            return Note::Progress;
        }
        self.owned = true;
        self.next_at = now + self.interval;
        if std::mem::take(&mut self.need_claim) {
            Note::Claimed
        } else {
            Note::Verified
        }
    }

    fn on_interface(&mut self, result: Result<Outcome, ApiError>, now: Instant) -> Note {
        match result {
            Ok(Outcome::Interface(eni)) => {
                self.targets.eni = Some(eni.clone());
                self.backoff = BACKOFF_MIN;
                self.next_at = now;
                Note::Interface(eni)
            }
            // (Any other outcome cannot answer it: a failure too.)
            _ => self.back_off(now),
        }
    }

    /// A failure: the next call waits the back-off, which doubles.
    fn back_off(&mut self, now: Instant) -> Note {
        let retry_in = self.backoff;
        self.next_at = now + retry_in;
        self.backoff = doubled(retry_in);
        Note::Failed { retry_in }
    }

    fn claim_calls(&self) -> VecDeque<Call> {
        // Private IPs first: an Elastic IP associated with one of them
        // needs it on the ENI.
        let mut v: VecDeque<Call> = self
            .targets
            .ips
            .iter()
            .map(|&ip| Call::AssignPrivateIp(ip))
            .collect();
        if self.targets.eip {
            v.push_back(Call::AssociateAddress);
        }
        v
    }

    fn check_calls(&self) -> VecDeque<Call> {
        let mut v = VecDeque::new();
        if !self.targets.ips.is_empty() {
            v.push_back(Call::DescribeNetworkInterfaces);
        }
        if self.targets.eip {
            v.push_back(Call::DescribeAddresses);
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);
    const IV: Duration = Duration::from_secs(5);

    fn mover(t0: Instant) -> Mover {
        Mover::new(
            Targets {
                eni: Some("eni-a".into()),
                eip: true,
                ips: vec![VIP],
            },
            IV,
            t0,
        )
    }

    fn err() -> Result<Outcome, ApiError> {
        Err(ApiError {
            code: "AuthFailure".into(),
            message: "no".into(),
        })
    }

    /// Answers every call successfully, as if the cloud agreed we own all.
    fn drain_ok(m: &mut Mover, now: Instant) -> Vec<Call> {
        let mut calls = Vec::new();
        while let Some(t) = m.poll(now) {
            let o = match t.call {
                Call::DescribeAddresses => Outcome::EipOwner(Some("eni-a".into())),
                Call::DescribeNetworkInterfaces => Outcome::Ips(vec![VIP]),
                _ => Outcome::Done,
            };
            calls.push(t.call.clone());
            m.on_result(t, Ok(o), now);
        }
        calls
    }

    #[test]
    fn backup_and_fault_never_claim() {
        let t0 = Instant::now();
        let mut m = mover(t0);
        for s in 0..100u64 {
            assert_eq!(m.poll(t0 + Duration::from_secs(s)), None);
        }
        m.set_role(Role::Fault, t0);
        assert_eq!(m.poll(t0 + Duration::from_secs(1000)), None);
        assert_eq!(m.next_deadline(), None);
        assert!(!m.owned());
    }

    #[test]
    fn master_claims_then_checks_every_interval() {
        let t0 = Instant::now();
        let mut m = mover(t0);
        m.set_role(Role::Master, t0);
        assert_eq!(
            drain_ok(&mut m, t0),
            [Call::AssignPrivateIp(VIP), Call::AssociateAddress]
        );
        assert!(m.owned());
        // Nothing until the interval is over.
        assert_eq!(m.poll(t0 + IV - Duration::from_millis(1)), None);
        assert_eq!(m.next_deadline(), Some(t0 + IV));
        assert_eq!(
            drain_ok(&mut m, t0 + IV),
            [Call::DescribeNetworkInterfaces, Call::DescribeAddresses]
        );
    }

    #[test]
    fn master_reclaims_after_ownership_lost() {
        let t0 = Instant::now();
        let mut m = mover(t0);
        m.set_role(Role::Master, t0);
        drain_ok(&mut m, t0);
        let t1 = t0 + IV;
        let t = m.poll(t1).unwrap();
        assert_eq!(t.call, Call::DescribeNetworkInterfaces);
        assert_eq!(
            m.on_result(t, Ok(Outcome::Ips(vec![VIP])), t1),
            Note::Progress
        );
        let t = m.poll(t1).unwrap();
        assert_eq!(t.call, Call::DescribeAddresses);
        let n = m.on_result(t, Ok(Outcome::EipOwner(Some("eni-b".into()))), t1);
        assert_eq!(n, Note::Lost("Elastic IP associated with eni-b".into()));
        assert!(!m.owned());
        // Claims again at once.
        assert_eq!(
            drain_ok(&mut m, t1),
            [Call::AssignPrivateIp(VIP), Call::AssociateAddress]
        );
        assert!(m.owned());
        // A private IP taken away is a loss too.
        let t2 = t1 + IV;
        let t = m.poll(t2).unwrap();
        let n = m.on_result(t, Ok(Outcome::Ips(vec![])), t2);
        assert_eq!(n, Note::Lost("10.0.0.100 not on eni-a".into()));
        assert_eq!(m.poll(t2).unwrap().call, Call::AssignPrivateIp(VIP));
    }

    #[test]
    fn errors_back_off_doubling_to_the_cap() {
        let t0 = Instant::now();
        let mut m = mover(t0);
        m.set_role(Role::Master, t0);
        let mut now = t0;
        let mut delays = Vec::new();
        for _ in 0..10 {
            let t = m.poll(now).expect("a retry is due");
            // A failed claim is retried as a claim.
            assert_eq!(t.call, Call::AssignPrivateIp(VIP));
            match m.on_result(t, err(), now) {
                Note::Failed { retry_in } => {
                    assert_eq!(m.poll(now + retry_in - Duration::from_millis(1)), None);
                    delays.push(retry_in.as_millis());
                    now += retry_in;
                }
                n => panic!("{n:?}"),
            }
        }
        assert_eq!(
            delays,
            [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000]
        );
        // A success resets the back-off.
        drain_ok(&mut m, now);
        assert!(m.owned());
        let t = m.poll(now + IV).unwrap();
        assert_eq!(
            m.on_result(t, err(), now + IV),
            Note::Failed {
                retry_in: BACKOFF_MIN
            }
        );
    }

    #[test]
    fn mastership_lost_during_a_claim_is_not_retried() {
        let t0 = Instant::now();
        let mut m = mover(t0);
        m.set_role(Role::Master, t0);
        let t = m.poll(t0).unwrap();
        assert!(t.call.is_claim());
        // The claim is on the wire; VRRP says backup meanwhile.
        m.set_role(Role::Backup, t0);
        // Whether it failed or succeeded, nothing follows.
        assert_eq!(m.on_result(t.clone(), err(), t0), Note::Stale);
        for s in 0..60 {
            assert_eq!(m.poll(t0 + Duration::from_secs(s)), None);
        }
        // And a claim not yet sent when the mastership went is not sent.
        m.set_role(Role::Master, t0);
        let t = m.poll(t0).unwrap();
        m.set_role(Role::Backup, t0);
        assert!(!m.may_send(&t));
        m.cancel(t);
        assert_eq!(m.poll(t0 + IV), None);
        // Master again: a new round, the old tickets stay stale.
        m.set_role(Role::Master, t0);
        let fresh = m.poll(t0).unwrap();
        assert!(m.may_send(&fresh));
        let old = Ticket {
            call: Call::AssociateAddress,
            epoch: 0,
        };
        assert!(!m.may_send(&old));
    }

    #[test]
    fn the_eni_is_found_first_in_any_role() {
        let t0 = Instant::now();
        let mut m = Mover::new(
            Targets {
                eni: None,
                eip: true,
                ips: vec![VIP],
            },
            IV,
            t0,
        );
        // A backup looks its ENI up too (and claims nothing).
        let t = m.poll(t0).unwrap();
        assert_eq!(t.call, Call::FindInterface);
        assert!(!t.call.is_claim());
        assert_eq!(m.poll(t0), None, "one call at a time");
        let fail = ApiError {
            code: "Transport".into(),
            message: "IMDS unreachable".into(),
        };
        assert_eq!(
            m.on_result(t, Err(fail.clone()), t0),
            Note::Failed {
                retry_in: BACKOFF_MIN
            }
        );
        assert_eq!(m.next_deadline(), Some(t0 + BACKOFF_MIN));
        // Master meanwhile: still no claim before the ENI is known.
        m.set_role(Role::Master, t0);
        let t = m.poll(t0).unwrap();
        assert_eq!(t.call, Call::FindInterface);
        // The answer holds across a role change.
        m.set_role(Role::Backup, t0);
        m.set_role(Role::Master, t0);
        assert_eq!(
            m.on_result(t, Ok(Outcome::Interface("eni-a".into())), t0),
            Note::Interface("eni-a".into())
        );
        assert_eq!(m.eni(), Some("eni-a"));
        assert_eq!(
            drain_ok(&mut m, t0),
            [Call::AssignPrivateIp(VIP), Call::AssociateAddress]
        );
        assert!(m.owned());
        // A wrong outcome is a failure, not an ENI.
        let mut m = Mover::new(
            Targets {
                eni: None,
                eip: false,
                ips: vec![],
            },
            IV,
            t0,
        );
        let t = m.poll(t0).unwrap();
        assert!(matches!(
            m.on_result(t, Ok(Outcome::Done), t0),
            Note::Failed { .. }
        ));
        assert_eq!(m.eni(), None);
    }

    #[test]
    fn an_added_ip_is_claimed_at_once_a_removed_one_only_unchecked() {
        let t0 = Instant::now();
        let vip2 = Ipv4Addr::new(10, 0, 0, 101);
        let mut m = mover(t0);
        m.set_role(Role::Master, t0);
        drain_ok(&mut m, t0);
        // Mid-interval, a pool VIP is allocated: claimed now, not in 5 s.
        let t1 = t0 + Duration::from_secs(1);
        m.set_ips(vec![VIP, vip2], t1);
        assert!(!m.owned());
        assert_eq!(m.next_deadline(), Some(t1));
        let calls = {
            let mut calls = Vec::new();
            while let Some(t) = m.poll(t1) {
                let o = match t.call {
                    Call::AssignPrivateIp(_) | Call::AssociateAddress => Outcome::Done,
                    ref c => panic!("{c:?}"),
                };
                calls.push(t.call.clone());
                m.on_result(t, Ok(o), t1);
            }
            calls
        };
        assert_eq!(
            calls,
            [
                Call::AssignPrivateIp(VIP),
                Call::AssignPrivateIp(vip2),
                Call::AssociateAddress
            ]
        );
        assert!(m.owned());
        // Removing one changes only what is checked.
        m.set_ips(vec![vip2], t1);
        assert!(m.owned());
        assert_eq!(m.next_deadline(), Some(t1 + IV));
        let t = m.poll(t1 + IV).unwrap();
        assert_eq!(t.call, Call::DescribeNetworkInterfaces);
        assert_eq!(
            m.on_result(t, Ok(Outcome::Ips(vec![vip2])), t1 + IV),
            Note::Progress
        );

        // Added while a claim is in flight: that round does not count, the
        // new set is claimed right after.
        let mut m = mover(t0);
        m.set_role(Role::Master, t0);
        let t = m.poll(t0).unwrap();
        assert_eq!(t.call, Call::AssignPrivateIp(VIP));
        m.set_ips(vec![VIP, vip2], t0);
        assert_eq!(m.on_result(t, Ok(Outcome::Done), t0), Note::Progress);
        assert!(!m.owned());
        let calls = drain_ok(&mut m, t0);
        assert!(calls.contains(&Call::AssignPrivateIp(vip2)), "{calls:?}");
        assert!(m.owned());

        // Added while backing off: the retry (a full claim) takes it.
        let mut m = mover(t0);
        m.set_role(Role::Master, t0);
        let t = m.poll(t0).unwrap();
        m.on_result(t, err(), t0);
        m.set_ips(vec![VIP, vip2], t0);
        assert_eq!(m.poll(t0), None, "the back-off holds");
        let calls = drain_ok(&mut m, t0 + BACKOFF_MIN);
        assert_eq!(
            calls[..2],
            [Call::AssignPrivateIp(VIP), Call::AssignPrivateIp(vip2)]
        );

        // A backup only remembers them.
        let mut m = mover(t0);
        m.set_ips(vec![vip2], t0);
        assert_eq!(m.poll(t0), None);
        assert_eq!(m.ips(), [vip2]);
    }

    #[test]
    fn nothing_to_move_is_owned() {
        let t0 = Instant::now();
        let mut m = Mover::new(
            Targets {
                eni: Some("eni-a".into()),
                eip: false,
                ips: vec![],
            },
            IV,
            t0,
        );
        m.set_role(Role::Master, t0);
        assert_eq!(m.poll(t0), None);
        assert!(m.owned());
    }
}
