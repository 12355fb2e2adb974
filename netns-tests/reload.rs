//! SIGHUP reload removing a backend: established connections keep working
//! (those on the removed backend drain), new connections avoid it.

use std::collections::HashMap;

use podlb_lab::demo::{lab_topology, Attach, BACKENDS};
use podlb_lab::netns;

use crate::common::*;

#[test]
fn reload_removes_backend_and_drains() {
    require_netns!("reload_removes_backend_and_drains");
    let budget = Budget::start();
    let attach = Attach::from_name("af_packet").unwrap();
    let topo = lab_topology(&attach).unwrap();
    // Built-in servers: no idle timeout of their own on kept-alive connections.
    let _servers: Vec<_> = (1..=3)
        .map(|i| {
            netns::serve_http(
                topo.ns(&format!("be{i}")),
                sa(std::net::Ipv4Addr::UNSPECIFIED, 80),
                &format!("be{i}\n"),
            )
            .unwrap()
        })
        .collect();
    let mut config = lab_config(&attach, "nat", false);
    let podlb = start_podlb(&topo, &attach, &config);
    let _log = LogOnPanic(vec![podlb.proc().clone()]);
    let client = topo.ns("client");

    // 20 kept-alive connections (more, up to 60, until at least 2 are on be3).
    let mut conns = open_until_on(client, 20, ("be3", 2), 60);
    let on_be3 = conns.iter().filter(|(_, b)| b == "be3").count();
    assert!(
        on_be3 >= 1,
        "no connection landed on be3 in {}",
        conns.len()
    );

    // Remove be3 and reload.
    config.services[0]
        .backends
        .retain(|b| b.ip() != std::net::IpAddr::V4(BACKENDS[2]));
    podlb.reload(&config).unwrap();
    wait_removed(&podlb, &format!("{}:80", BACKENDS[2]), &budget);
    assert!(podlb.proc().is_running(), "podlb exited on SIGHUP");

    // Every established connection still answers, from the same backend.
    for round in 0..2 {
        for (i, (c, body)) in conns.iter_mut().enumerate() {
            let r = c.get("/", false).unwrap_or_else(|e| {
                panic!("conn {i} (on {body}) failed after reload, round {round}: {e}")
            });
            assert_eq!(r.status, 200);
            assert_eq!(r.body.trim(), body, "conn {i} changed backend");
        }
    }

    // New connections never reach be3.
    let counts: HashMap<String, usize> =
        netns::http_get_many_until(client, vip(80), 300, 8, true, budget.deadline()).unwrap();
    assert_eq!(counts.values().sum::<usize>(), 300);
    assert!(
        !counts.contains_key("be3"),
        "new connections reached removed be3: {counts:?}"
    );
    assert!(
        counts.contains_key("be1") && counts.contains_key("be2"),
        "{counts:?}"
    );

    // And the old ones still work after that.
    for (c, body) in conns.iter_mut() {
        let r = c
            .get("/", true)
            .expect("last request on an established connection");
        assert_eq!(r.body.trim(), body);
    }
    stop_podlb(&podlb);
}
