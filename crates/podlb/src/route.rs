//! Reads podlb's routing view (`podlb_core::route::Routes`): the
//! interface's address and prefix, and `/proc/net/route`.

use std::io;

use podlb_core::route::Routes;
use podlb_io::sys;

/// The address and prefix of `ifname` and the routes through it in this
/// network namespace.
pub fn load(ifname: &str) -> io::Result<Routes> {
    let (addr, prefix) = sys::ipv4_net_of(ifname)?;
    let text = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    Ok(Routes::from_proc_net_route(addr, prefix, ifname, &text))
}
