//! The worker threads: one per device, each with its own [`Forwarder`].

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::config::Config;
use crate::dataplane::{run_worker, Shared};
use podlb_core::forward::{Forwarder, NatPorts};
use podlb_core::hash::hash_bytes;
use podlb_io::Device;

use super::attach::{Attached, Devices};
use super::{EngineError, EngineView};

/// Starts one worker per device, first with the empty snapshot.
pub(super) fn spawn(
    devices: Devices,
    cfg: &Config,
    view: &EngineView,
    att: &Attached,
) -> Result<Vec<JoinHandle<()>>, EngineError> {
    let shared = &view.shared;
    let port_seed = {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        hash_bytes(&t.as_nanos().to_le_bytes(), std::process::id() as u64) as u32
    };
    let mk_fwd = |i: usize| Forwarder {
        mac: att.mac,
        own_mac: att.own_mac,
        own_ip: att.own_ip,
        active: shared.active.load(Ordering::Relaxed),
        accept_mode: cfg.vrrp.as_ref().is_none_or(|v| v.accept_mode),
        mac6: att.mac6,
        active6: shared.active6.load(Ordering::Relaxed),
        flows: shared.flows.clone(),
        neighbors: shared.neighbors.clone(),
        flows6: shared.flows6.clone(),
        neighbors6: shared.neighbors6.clone(),
        own_ip6: att.own_ip6,
        stats: view.workers[i].clone(),
        ports: NatPorts::new(i, cfg.workers, port_seed),
        pickup: cfg.flows.pickup,
        sync: att.sync_link.as_ref().map(|l| l.queues[i].clone()),
        local_ip: att.local_ip,
        out: Default::default(),
        refused: (!cfg.flows.refused_hold.is_zero()).then(|| shared.refused.clone()),
        icmp_errors: cfg.flows.icmp_errors,
        frags: Default::default(),
    };
    let busy_poll = cfg.io.busy_poll;
    match devices {
        Devices::Packet(socks) => start(socks, shared, busy_poll, mk_fwd),
        Devices::Tap(queues) => start(queues, shared, busy_poll, mk_fwd),
        Devices::Xdp(devs) => start(devs, shared, busy_poll, mk_fwd),
    }
}

fn start<D: Device + 'static>(
    devices: Vec<D>,
    shared: &Arc<Shared>,
    busy_poll: Duration,
    mk_fwd: impl Fn(usize) -> Forwarder,
) -> Result<Vec<JoinHandle<()>>, EngineError> {
    let mut handles = Vec::new();
    for (i, dev) in devices.into_iter().enumerate() {
        let (sh, fwd) = (shared.clone(), mk_fwd(i));
        let h = std::thread::Builder::new()
            .name(format!("podlb-w{i}"))
            .spawn(move || run_worker(dev, sh, i, fwd, busy_poll))
            .map_err(EngineError::Thread)?;
        handles.push(h);
    }
    Ok(handles)
}
