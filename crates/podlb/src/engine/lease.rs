//! Serving roles besides VRRP: the Kubernetes Lease election
//! ([`LeaseDriver`]) and the cloud address mover, told every serve
//! transition.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::config::Config;
use crate::k8s::lease::{self, LeaseView};
use crate::redundancy::Effects;

use super::{EngineError, EngineView};

/// Starts the cloud mover if `[cloud]` is set, told the initial role.
pub(super) fn start_cloud(
    cfg: &Config,
    active: bool,
) -> Result<Option<crate::cloud::CloudHandle>, EngineError> {
    let Some(c) = &cfg.cloud else {
        return Ok(None);
    };
    // The cloud mover moves IPv4 addresses (secondary private IPs).
    let vips = cfg
        .services
        .iter()
        .filter_map(|s| match s.vip {
            std::net::IpAddr::V4(v) => Some(v),
            std::net::IpAddr::V6(_) => None,
        })
        .collect();
    let vrid = cfg
        .vrrp
        .as_ref()
        .map_or(String::new(), |v| v.vrid.to_string());
    let h = crate::cloud::CloudHandle::start(c, vips, vrid).map_err(EngineError::Thread)?;
    use crate::cloud::mover::Role;
    h.set_role(if active { Role::Master } else { Role::Backup });
    Ok(Some(h))
}

/// The mover's role for a serve transition: not serving because of a
/// VRRP or Lease fault is `Fault`, else `Backup`.
pub(super) fn cloud_role(serve: bool, view: &EngineView) -> crate::cloud::mover::Role {
    use crate::cloud::mover::Role;
    let vrrp_fault = view
        .vrrp
        .as_ref()
        .is_some_and(|v| v.state.load(Ordering::Relaxed) == 3);
    let lease_fault = view
        .kube
        .as_ref()
        .and_then(|k| k.lease.as_ref())
        .is_some_and(|l| l.state.load(Ordering::Relaxed) == lease::FAULT);
    match serve {
        true => Role::Master,
        false if vrrp_fault || lease_fault => Role::Fault,
        false => Role::Backup,
    }
}

/// Drives serving from the Lease election: the same effects and notify
/// hooks as the VRRP driver.
pub(super) struct LeaseDriver {
    s: crate::config::LeaseSettings,
    leader: Arc<AtomicBool>,
    view: Option<Arc<LeaseView>>,
    state: u8,
    vips: String,
}

impl LeaseDriver {
    pub(super) fn new(
        s: crate::config::LeaseSettings,
        leader: Arc<AtomicBool>,
        view: Option<Arc<LeaseView>>,
        cfg: &Config,
    ) -> LeaseDriver {
        let mut vips: Vec<String> = cfg.services.iter().map(|s| s.vip.to_string()).collect();
        if let Some(k) = &cfg.kubernetes {
            vips.extend(k.reconcile.vip_pools.iter().map(|p| p.to_string()));
        }
        LeaseDriver {
            s,
            leader,
            view,
            state: lease::INIT,
            vips: vips.join(","),
        }
    }

    pub(super) fn is_master(&self) -> bool {
        self.state == lease::MASTER
    }

    pub(super) fn step(&mut self, _view: &EngineView) -> Effects {
        let state = match &self.view {
            Some(v) => v.state.load(Ordering::Relaxed),
            None if self.leader.load(Ordering::Relaxed) => lease::MASTER,
            None => lease::BACKUP,
        };
        if state == self.state {
            return Effects::default();
        }
        let was = std::mem::replace(&mut self.state, state);
        let master = state == lease::MASTER;
        let hook = match state {
            lease::MASTER => self.s.on_master.as_deref(),
            lease::BACKUP => self.s.on_backup.as_deref(),
            lease::FAULT => self.s.on_fault.as_deref(),
            _ => None,
        };
        let name = crate::redundancy::STATE_NAMES[state as usize];
        tracing::info!(state = name, "lease: {name}");
        if let Some(h) = hook {
            crate::redundancy::spawn_hook(h, name, &self.vips, "", None);
        }
        Effects {
            serve: Some(master),
            garp: master.then_some(self.s.garp_count),
            takeover: master && was == lease::BACKUP,
        }
    }

    pub(super) fn stopping(&mut self, _view: &EngineView) {
        if self.state == lease::MASTER {
            tracing::info!("stopping: releasing the lease");
        }
    }
}
