//! Least privilege (issue 7): a running podlb holds CAP_NET_RAW and
//! CAP_NET_ADMIN and nothing else, in every thread, with the bounding set
//! reduced to match; a notify hook it runs (as root) gets no more.

use std::time::Duration;

use podlb_lab::demo::{Attach, VrrpSpec};

use crate::common::*;

const NET_ADMIN_RAW: u64 = 1 << 12 | 1 << 13;

/// The capability sets of one task: (CapInh, CapPrm, CapEff, CapBnd, CapAmb).
fn caps_of(status: &str) -> [u64; 5] {
    let get = |f: &str| {
        status
            .lines()
            .find(|l| l.starts_with(f))
            .and_then(|l| l.split_whitespace().nth(1))
            .map(|v| u64::from_str_radix(v, 16).unwrap())
            .unwrap_or_else(|| panic!("no {f} in status"))
    };
    ["CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:"].map(get)
}

fn assert_least(label: &str, caps: [u64; 5]) {
    assert_eq!(
        caps,
        [0, NET_ADMIN_RAW, NET_ADMIN_RAW, NET_ADMIN_RAW, 0],
        "{label}: capabilities (inh, prm, eff, bnd, amb) are not just NET_ADMIN+NET_RAW"
    );
}

#[test]
fn podlb_keeps_only_net_raw_and_net_admin() {
    require_netns!("podlb_keeps_only_net_raw_and_net_admin");
    let budget = Budget::start();
    let attach = Attach::from_name("af_packet").unwrap();
    let topo = podlb_lab::demo::lab_topology(&attach).unwrap();
    // A hook that records its own capabilities.
    let out = topo.dir().join("hook-status");
    let hook = topo.dir().join("hook.sh");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\ncat /proc/self/status > {}.tmp && mv {0}.tmp {0}\n",
            out.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut v = VrrpSpec::new(200, 100);
    v.hook = Some(hook.display().to_string());
    let config = lab_config(&attach, "nat", false).with_vrrp(v);
    let mut procs: Vec<_> = (1..=3)
        .map(|i| {
            let name = format!("be{i}");
            start_nginx(&topo, topo.ns(&name), &name, &name)
        })
        .collect();
    let podlb = start_podlb(&topo, &attach, &config);
    procs.push(podlb.proc().clone());
    let _log = LogOnPanic(procs);

    // Every thread of the running process.
    let pid = podlb.proc().pid();
    let tasks: Vec<_> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|e| e.ok())
        .collect();
    assert!(
        tasks.len() >= 3,
        "expected the control, worker and admin threads"
    );
    for t in &tasks {
        // A short-lived thread (a hook runner, a blocking-pool thread) may
        // have ended since the directory was listed.
        let Ok(status) = std::fs::read_to_string(t.path().join("status")) else {
            continue;
        };
        let name = status.lines().next().unwrap_or("?").to_string();
        assert_least(&name, caps_of(&status));
    }
    eprintln!(
        "{} threads, each with only CAP_NET_ADMIN and CAP_NET_RAW",
        tasks.len()
    );

    // The on_master hook ran as root with no more than that.
    let deadline = std::time::Instant::now() + budget.left(Duration::from_secs(10));
    let status = loop {
        if let Ok(s) = std::fs::read_to_string(&out) {
            break s;
        }
        assert!(std::time::Instant::now() < deadline, "the hook did not run");
        std::thread::sleep(Duration::from_millis(50));
    };
    let [inh, prm, eff, bnd, amb] = caps_of(&status);
    assert_eq!((inh, bnd, amb), (0, NET_ADMIN_RAW, 0), "hook: {status}");
    assert_eq!(prm & !NET_ADMIN_RAW, 0, "hook permitted: {prm:#x}");
    assert_eq!(eff & !NET_ADMIN_RAW, 0, "hook effective: {eff:#x}");
    // And it still serves.
    let c = podlb_lab::netns::http_get_many_until(
        topo.ns("client"),
        vip(80),
        30,
        4,
        true,
        budget.deadline(),
    )
    .unwrap();
    assert_eq!(c.values().sum::<usize>(), 30);
    stop_podlb(&podlb);
}
