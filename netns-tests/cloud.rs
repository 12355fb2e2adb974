//! The cloud address mover (issue 5 part 3) against moto's EC2 emulator.
//!
//! moto_server (pinned in deps.sh) runs inside the client's namespace on
//! 198.18.0.10:5000, so both podlb hosts reach it over the lab bridge; it
//! is a process of the topology, killed when the topology drops (also when
//! a test panics). `cloud_ec2.py` (boto3) creates a VPC 198.18.0.0/16, a
//! subnet, one ENI per podlb host and an Elastic IP, and reads the state
//! back. Each podlb gets `[cloud] provider = "aws"` with its own ENI, the
//! EIP's allocation id, and (by default) the VIP as secondary private IP.
//!
//! What moto models, and so what these tests can and cannot show:
//! - `AssignPrivateIpAddresses` with `AllowReassignment=true` adds the IP
//!   to the new ENI but leaves it listed on the old one too (real EC2 moves
//!   it). The tests therefore assert that the VIP is on the master's ENI,
//!   not that it left the backup's.
//! - `AssociateAddress` with `AllowReassociation=true` moves the EIP's
//!   association like EC2 does (without it moto answers
//!   `Resource.AlreadyAssociated`); that is what the failover and
//!   take-back assertions use.
//! - moto checks no credentials unless started with
//!   `INITIAL_NO_AUTH_ACTION_COUNT=0`; the bad-credentials test starts one
//!   that way, and every call fails with `AuthFailure`.
//! - No IAM policy evaluation, no rate limiting, no eventual consistency:
//!   a claim is visible to the next Describe at once.
//!
//! Waits are bounded; nothing is timed.

use std::time::{Duration, Instant};

use podlb_lab::demo::{metric_value, Podlb, LB, LB2};
use podlb_lab::netns::{self, Proc, Topology};
use serde_json::Value;

use crate::common::*;
use crate::failover::{lab, start_lb_with, vrrp_config, wait_http, wait_state};

const MOTO_PORT: u16 = 5000;
const VIP_S: &str = "198.18.0.100";
const CLAIMS: [&str; 2] = ["AssignPrivateIpAddresses", "AssociateAddress"];

/// Starts moto_server in the client namespace; `auth`: check credentials.
fn start_moto(topo: &Topology, auth: bool) -> (Proc, String) {
    let ns = topo.ns("client");
    let port = MOTO_PORT.to_string();
    let mut args = vec!["env"];
    if auth {
        args.push("INITIAL_NO_AUTH_ACTION_COUNT=0");
    }
    args.extend(["moto_server", "-H", "198.18.0.10", "-p", &port]);
    let p = topo.spawn(ns, "moto", &args).expect("moto_server");
    if let Err(e) = netns::wait_listening(ns, MOTO_PORT, Duration::from_secs(30), Some(&p)) {
        panic!(
            "moto_server did not start ({e}); run netns-tests/deps.sh\n{}",
            p.log_tail(3000)
        );
    }
    (p, format!("http://198.18.0.10:{MOTO_PORT}"))
}

/// Runs cloud_ec2.py in the client namespace; its JSON answer.
fn ec2(topo: &Topology, url: &str, args: &[&str]) -> Value {
    let script = test_file("cloud_ec2.py");
    let script = script.to_string_lossy();
    let mut a = vec!["python3", &*script, url];
    a.extend_from_slice(args);
    let out = netns::exec_timeout(topo.ns("client"), &a, Duration::from_secs(30)).unwrap();
    assert!(
        out.status.success(),
        "cloud_ec2.py {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// podlb with credentials in its environment (a wrapper script: the
/// harness starts processes with the test's own environment).
fn start_cloud_lb(
    topo: &Topology,
    role: &str,
    priority: u8,
    peer: std::net::Ipv4Addr,
    cloud: &str,
    key: &str,
) -> Podlb {
    let wrapper = topo.dir().join(format!("{role}-podlb.sh"));
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec env AWS_ACCESS_KEY_ID={key} AWS_SECRET_ACCESS_KEY=secret-{key} {} \"$@\"\n",
            podlb_exe().display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut config = vrrp_config(priority, 100, Some(peer), false);
    config.extra = cloud.to_string();
    start_lb_with(topo, role, &config, &wrapper)
}

fn aws_table(url: &str, eni: &str, alloc: &str) -> String {
    format!(
        "\n[cloud]\nprovider = \"aws\"\nendpoint_url = \"{url}\"\nregion = \"us-east-1\"\n\
         network_interface_id = \"{eni}\"\nallocation_id = \"{alloc}\"\nreconcile_interval_ms = 1000\n"
    )
}

/// podlb's claim calls so far (ok and error).
fn claims(p: &Podlb) -> f64 {
    let m = p.metrics().unwrap();
    let mut n = 0.0;
    for a in CLAIMS {
        for r in ["ok", "error"] {
            n += metric_value(
                &m,
                "podlb_cloud_calls_total",
                &[("action", a), ("result", r)],
            )
            .unwrap_or(0.0);
        }
    }
    n
}

/// Polls the EC2 state until the EIP points at `eni` and the VIP is on it.
fn wait_owner(topo: &Topology, url: &str, ids: &Value, eni: &str, timeout: Duration) -> Value {
    let (alloc, e1, e2) = (
        ids["alloc"].as_str().unwrap(),
        ids["eni1"].as_str().unwrap(),
        ids["eni2"].as_str().unwrap(),
    );
    let t0 = Instant::now();
    loop {
        let st = ec2(topo, url, &["state", alloc, e1, e2]);
        let vip_on = st["ips"][eni]
            .as_array()
            .is_some_and(|a| a.iter().any(|v| v == VIP_S));
        if st["eip_eni"] == eni && vip_on {
            return st;
        }
        assert!(
            t0.elapsed() < timeout,
            "EIP/VIP not on {eni} within {timeout:?}: {st}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn cloud_aws_address_follows_the_vrrp_master() {
    require_netns!("cloud_aws_address_follows_the_vrrp_master");
    let lab = lab(false);
    let (moto, url) = start_moto(&lab.topo, false);
    let ids = ec2(&lab.topo, &url, &["setup", VIP_S]);
    let (eni1, eni2, alloc) = (
        ids["eni1"].as_str().unwrap().to_string(),
        ids["eni2"].as_str().unwrap().to_string(),
        ids["alloc"].as_str().unwrap().to_string(),
    );
    let lb1 = start_cloud_lb(
        &lab.topo,
        "lb1",
        200,
        LB2,
        &aws_table(&url, &eni1, &alloc),
        "AKIDLB1",
    );
    let mut logs = vec![moto.clone(), lb1.proc().clone()];
    wait_state(&lb1, "master", Duration::from_secs(10));
    let lb2 = start_cloud_lb(
        &lab.topo,
        "lb2",
        100,
        LB,
        &aws_table(&url, &eni2, &alloc),
        "AKIDLB2",
    );
    logs.push(lb2.proc().clone());
    let _log = LogOnPanic(logs);
    wait_state(&lb2, "backup", Duration::from_secs(10));

    // The master claims: the EIP and the VIP go to its ENI.
    let st = wait_owner(&lab.topo, &url, &ids, &eni1, Duration::from_secs(15));
    eprintln!("after start: {st}");
    let cloud = lb1.status().unwrap().cloud.expect("a cloud section");
    assert_eq!(cloud.provider, "aws");
    assert_eq!(cloud.state, "claimed", "{cloud:?}");
    assert_eq!(claims(&lb2), 0.0, "the backup called a claim action");
    let client = lab.topo.ns("client").to_string();
    wait_http(&client, Duration::from_secs(5));

    // Someone reassociates the EIP out of band: the master takes it back
    // within its reconcile interval (1 s; bounded wait 10 s).
    ec2(&lab.topo, &url, &["steal", &alloc, &eni2]);
    wait_owner(&lab.topo, &url, &ids, &eni1, Duration::from_secs(10));
    assert!(
        lb1.proc().log_tail(20_000).contains("claiming it back"),
        "lb1 did not log the take-back"
    );
    assert_eq!(claims(&lb2), 0.0, "the backup called a claim action");

    // Failover: lb1's link goes down (fault), lb2 becomes master and claims.
    let lb1_claims = claims(&lb1);
    lab.topo.set_port_up("lb1", false).unwrap();
    wait_state(&lb2, "master", Duration::from_secs(5));
    let st = wait_owner(&lab.topo, &url, &ids, &eni2, Duration::from_secs(15));
    eprintln!("after failover: {st}");
    wait_http(&client, Duration::from_secs(5));
    // Two reconcile intervals later the ex-master has not claimed again.
    std::thread::sleep(Duration::from_millis(2500));
    let st = ec2(&lab.topo, &url, &["state", &alloc, &eni1, &eni2]);
    assert_eq!(st["eip_eni"], eni2.as_str(), "{st}");
    assert_eq!(
        claims(&lb1),
        lb1_claims,
        "the ex-master claimed after losing mastership"
    );
    assert_eq!(lb1.status().unwrap().cloud.unwrap().state, "released");
    let m = lb2.metrics().unwrap();
    assert_eq!(metric_value(&m, "podlb_cloud_owned", &[]), Some(1.0));

    stop_podlb(&lb2);
    lab.topo.set_port_up("lb1", true).unwrap();
    stop_podlb(&lb1);
}

#[test]
fn cloud_aws_bad_credentials_keep_forwarding() {
    require_netns!("cloud_aws_bad_credentials_keep_forwarding");
    let lab = lab(false);
    let (moto, url) = start_moto(&lab.topo, true);
    let table = aws_table(&url, "eni-0000000000000000a", "eipalloc-0000000000000000a");
    let lb1 = start_cloud_lb(&lab.topo, "lb1", 200, LB2, &table, "AKIDWRONG");
    let _log = LogOnPanic(vec![moto, lb1.proc().clone()]);
    wait_state(&lb1, "master", Duration::from_secs(10));

    // Errors are counted and retried with back-off (0.5 s, 1 s, ...).
    let t0 = Instant::now();
    loop {
        let m = lb1.metrics().unwrap();
        let errors = metric_value(
            &m,
            "podlb_cloud_calls_total",
            &[("action", "AssignPrivateIpAddresses"), ("result", "error")],
        )
        .unwrap_or(0.0);
        if errors >= 2.0 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "no retried errors:\n{m}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let cloud = lb1.status().unwrap().cloud.expect("a cloud section");
    assert!(cloud.errors >= 2, "{cloud:?}");
    assert_eq!(cloud.state, "claiming", "{cloud:?}");
    let last = cloud.last_error.unwrap_or_default();
    assert!(
        last.contains("AuthFailure") && last.contains("not able to validate"),
        "last_error without the API's code and message: {last:?}"
    );
    assert!(lb1
        .proc()
        .log_tail(20_000)
        .contains("AWS was not able to validate"));

    // The data plane does not care.
    let client = lab.topo.ns("client").to_string();
    wait_http(&client, Duration::from_secs(5));
    stop_podlb(&lb1);
}
