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
//! - With `INITIAL_NO_AUTH_ACTION_COUNT=N`, moto lets the first N requests
//!   through unchecked and checks every later one: signature, the session
//!   token of STS-issued credentials (a wrong one is `AuthFailure`) and the
//!   IAM policies of the user or assumed role. It does not check that
//!   credentials have expired. The credential-chain tests use N = the set-up
//!   calls (+1 for podlb's unsigned AssumeRoleWithWebIdentity, which moto
//!   would otherwise refuse unsigned).
//!
//! The instance metadata is `podlb_lab::imds::FakeImds` (IMDSv2 token
//! protocol, the MAC and ENI, role credentials with a set lifetime) on the
//! client's address.
//!
//! Waits are bounded; nothing is timed.

use std::time::{Duration, Instant};

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener};
use std::path::PathBuf;

use podlb_lab::demo::{lab_topology, metric_value, Attach, ConfigSpec, Podlb, CLIENT, LB, LB2};
use podlb_lab::imds::{FakeImds, ImdsCredentials, ImdsSpec};
use podlb_lab::netns::{self, Proc, Topology};
use serde_json::Value;

use crate::common::*;
use crate::failover::{lab, start_lb_with, vrrp_config, wait_http, wait_state};

const MOTO_PORT: u16 = 5000;
const VIP_S: &str = "198.18.0.100";
const CLAIMS: [&str; 2] = ["AssignPrivateIpAddresses", "AssociateAddress"];

/// Requests `cloud_ec2.py setup-auth` makes (its SETUP_AUTH_CALLS).
const SETUP_AUTH_CALLS: u32 = 10;

/// Starts moto_server in the client namespace; `auth`: check credentials
/// after that many requests.
fn start_moto(topo: &Topology, auth: Option<u32>) -> (Proc, String) {
    let ns = topo.ns("client");
    let port = MOTO_PORT.to_string();
    let mut args = vec!["env".to_string()];
    if let Some(n) = auth {
        args.push(format!("INITIAL_NO_AUTH_ACTION_COUNT={n}"));
    }
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
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
    ec2_as(topo, url, None, args)
}

/// As [`ec2`], signed with `ids`' admin user (moto checking credentials).
fn ec2_as(topo: &Topology, url: &str, ids: Option<&Value>, args: &[&str]) -> Value {
    let script = test_file("cloud_ec2.py");
    let script = script.to_string_lossy();
    let keys = ids.map(|i| {
        [
            format!("AWS_ACCESS_KEY_ID={}", i["key"].as_str().unwrap()),
            format!("AWS_SECRET_ACCESS_KEY={}", i["secret"].as_str().unwrap()),
        ]
    });
    let mut a = vec!["env"];
    if let Some(k) = &keys {
        a.extend(k.iter().map(String::as_str));
    }
    a.extend(["python3", &*script, url]);
    a.extend_from_slice(args);
    let out = netns::exec_timeout(topo.ns("client"), &a, Duration::from_secs(30)).unwrap();
    assert!(
        out.status.success(),
        "cloud_ec2.py {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// podlb with static keys in its environment.
fn start_cloud_lb(
    topo: &Topology,
    role: &str,
    priority: u8,
    peer: Ipv4Addr,
    cloud: &str,
    key: &str,
) -> Podlb {
    let secret = format!("secret-{key}");
    let env = [
        ("AWS_ACCESS_KEY_ID", key),
        ("AWS_SECRET_ACCESS_KEY", &secret),
    ];
    start_cloud_lb_env(topo, role, priority, peer, cloud, &env)
}

/// podlb with `env` added to its environment.
fn start_cloud_lb_env(
    topo: &Topology,
    role: &str,
    priority: u8,
    peer: Ipv4Addr,
    cloud: &str,
    env: &[(&str, &str)],
) -> Podlb {
    let wrapper = podlb_with_env(topo, role, env);
    let mut config = vrrp_config(priority, 100, Some(peer), false);
    config.extra = cloud.to_string();
    start_lb_with(topo, role, &config, &wrapper)
}

/// A script that runs podlb with `env` added (the harness starts processes
/// with the test's own environment).
fn podlb_with_env(topo: &Topology, label: &str, env: &[(&str, &str)]) -> PathBuf {
    let wrapper = topo.dir().join(format!("{label}-podlb.sh"));
    let vars: Vec<String> = env.iter().map(|(k, v)| format!("{k}='{v}'")).collect();
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec env {} {} \"$@\"\n",
            vars.join(" "),
            podlb_exe().display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    wrapper
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
        let auth = ids.get("key").map(|_| ids);
        let st = ec2_as(topo, url, auth, &["state", alloc, e1, e2]);
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
    let (moto, url) = start_moto(&lab.topo, None);
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
    let (moto, url) = start_moto(&lab.topo, Some(0));
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

/// The fake IMDS on the client's address: this instance is `eni`; its role
/// hands out `creds` in turn, each valid for `lifetime`.
fn start_imds(
    topo: &Topology,
    eni: &str,
    creds: Vec<ImdsCredentials>,
    lifetime: Duration,
) -> FakeImds {
    let listener = netns::in_netns(topo.ns("client"), || {
        TcpListener::bind(SocketAddr::V4(SocketAddrV4::new(CLIENT, 0)))
    })
    .unwrap()
    .unwrap();
    let spec = ImdsSpec {
        mac: "0e:11:22:33:44:55".into(),
        eni: eni.into(),
        role: Some("podlb-node".into()),
        credentials: creds,
        lifetime,
        // Shorter than podlb keeps a token: it must renew one after a 401.
        token_ttl_cap: Some(Duration::from_secs(4)),
    };
    FakeImds::from_listener(listener, spec).unwrap()
}

/// `[cloud]` without `network_interface_id`: the ENI comes from the IMDS.
fn aws_table_no_eni(url: &str, alloc: &str) -> String {
    format!(
        "\n[cloud]\nprovider = \"aws\"\nendpoint_url = \"{url}\"\nregion = \"us-east-1\"\n\
         allocation_id = \"{alloc}\"\nreconcile_interval_ms = 1000\n"
    )
}

/// `podlb_cloud_calls_total` of `action` with `result`.
fn calls(p: &Podlb, action: &str, result: &str) -> f64 {
    let m = p.metrics().unwrap();
    metric_value(
        &m,
        "podlb_cloud_calls_total",
        &[("action", action), ("result", result)],
    )
    .unwrap_or(0.0)
}

/// Every failed call podlb counted (EC2, IMDS, credentials).
fn failed_calls(p: &Podlb) -> f64 {
    [
        "AssignPrivateIpAddresses",
        "AssociateAddress",
        "DescribeAddresses",
        "DescribeNetworkInterfaces",
        "InstanceMetadata",
        "Credentials",
    ]
    .iter()
    .map(|a| calls(p, a, "error"))
    .sum()
}

/// IRSA: `AWS_ROLE_ARN` + `AWS_WEB_IDENTITY_TOKEN_FILE` → STS
/// AssumeRoleWithWebIdentity (moto), whose session credentials sign the
/// EC2 calls (moto checks them, session token included); the ENI is not
/// configured and comes from the instance metadata.
#[test]
fn cloud_aws_web_identity_credentials_and_eni_from_imds() {
    require_netns!("cloud_aws_web_identity_credentials_and_eni_from_imds");
    let lab = lab(false);
    // The set-up calls and podlb's one unsigned STS call go through; every
    // later request is checked.
    let (moto, url) = start_moto(&lab.topo, Some(SETUP_AUTH_CALLS + 1));
    let ids = ec2(&lab.topo, &url, &["setup-auth", VIP_S]);
    let (eni1, alloc, role) = (
        ids["eni1"].as_str().unwrap(),
        ids["alloc"].as_str().unwrap(),
        ids["role_arn"].as_str().unwrap(),
    );
    let imds = start_imds(&lab.topo, eni1, vec![], Duration::from_secs(60));
    let token = lab.topo.dir().join("web-identity-token");
    std::fs::write(&token, "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJwb2RsYiJ9.c2ln\n").unwrap();
    let token = token.to_string_lossy();
    let imds_url = imds.url();
    let env = [
        ("AWS_ROLE_ARN", role),
        ("AWS_WEB_IDENTITY_TOKEN_FILE", &*token),
        ("AWS_ROLE_SESSION_NAME", "podlb-lb1"),
        ("AWS_ENDPOINT_URL_STS", &url),
        ("AWS_EC2_METADATA_SERVICE_ENDPOINT", &imds_url),
    ];
    let lb1 = start_cloud_lb_env(
        &lab.topo,
        "lb1",
        200,
        LB2,
        &aws_table_no_eni(&url, alloc),
        &env,
    );
    let _log = LogOnPanic(vec![moto, lb1.proc().clone()]);
    wait_state(&lb1, "master", Duration::from_secs(10));

    let st = wait_owner(&lab.topo, &url, &ids, eni1, Duration::from_secs(15));
    eprintln!("claimed: {st}");
    let cloud = lb1.status().unwrap().cloud.expect("a cloud section");
    assert_eq!(cloud.state, "claimed", "{cloud:?}");
    assert_eq!(cloud.eni.as_deref(), Some(eni1), "{cloud:?}");
    let source = cloud.credentials.unwrap_or_default();
    assert!(
        source.starts_with("web-identity, expires at "),
        "{source:?}"
    );
    assert_eq!(calls(&lb1, "Credentials", "ok"), 1.0);
    assert_eq!(calls(&lb1, "InstanceMetadata", "ok"), 1.0);
    assert_eq!(failed_calls(&lb1), 0.0, "{:?}", lb1.status().unwrap().cloud);
    assert!(
        imds.issued().is_empty(),
        "web identity comes before the IMDS role"
    );
    let client = lab.topo.ns("client").to_string();
    wait_http(&client, Duration::from_secs(5));
    stop_podlb(&lb1);
}

/// IMDSv2 role credentials that expire after 12 s: podlb fetches new ones
/// at half their life, before the old expire, and no call fails across
/// several expiries (moto checks every call's credentials and session
/// token; IMDS tokens are capped at 4 s, so podlb also renews those on 401).
#[test]
fn cloud_aws_imds_credentials_refreshed_before_expiry() {
    require_netns!("cloud_aws_imds_credentials_refreshed_before_expiry");
    let lab = lab(false);
    let (moto, url) = start_moto(&lab.topo, Some(SETUP_AUTH_CALLS));
    let ids = ec2(&lab.topo, &url, &["setup-auth", VIP_S]);
    let (eni1, alloc, role) = (
        ids["eni1"].as_str().unwrap(),
        ids["alloc"].as_str().unwrap(),
        ids["role_arn"].as_str().unwrap(),
    );
    let sets = ec2_as(&lab.topo, &url, Some(&ids), &["assume", role, "8"]);
    let creds: Vec<ImdsCredentials> = sets
        .as_array()
        .unwrap()
        .iter()
        .map(|c| ImdsCredentials {
            access_key_id: c["id"].as_str().unwrap().into(),
            secret_access_key: c["secret"].as_str().unwrap().into(),
            token: c["token"].as_str().unwrap().into(),
        })
        .collect();
    let lifetime = Duration::from_secs(12);
    let imds = start_imds(&lab.topo, eni1, creds, lifetime);
    let imds_url = imds.url();
    let env = [("AWS_EC2_METADATA_SERVICE_ENDPOINT", &*imds_url)];
    let lb1 = start_cloud_lb_env(
        &lab.topo,
        "lb1",
        200,
        LB2,
        &aws_table_no_eni(&url, alloc),
        &env,
    );
    let _log = LogOnPanic(vec![moto, lb1.proc().clone()]);
    wait_state(&lb1, "master", Duration::from_secs(10));
    wait_owner(&lab.topo, &url, &ids, eni1, Duration::from_secs(15));

    // Past the third set's expiry, with a check every second throughout.
    let first = imds.issued()[0].clone();
    let checks_at_first_expiry = {
        while std::time::SystemTime::now() < first.expires {
            std::thread::sleep(Duration::from_millis(200));
        }
        calls(&lb1, "DescribeNetworkInterfaces", "ok")
    };
    std::thread::sleep(2 * lifetime);
    let issued = imds.issued();
    eprintln!("issued: {issued:?}");
    assert!(issued.len() >= 4, "{issued:?}");
    for w in issued.windows(2) {
        assert!(
            w[1].at < w[0].expires,
            "{} fetched only after {} expired",
            w[1].access_key_id,
            w[0].access_key_id
        );
        // At half life, give or take the one-second Expiration resolution.
        let early = w[0].expires.duration_since(w[1].at).unwrap();
        assert!(
            early >= Duration::from_secs(4),
            "refreshed {early:?} before expiry"
        );
    }
    let checks = calls(&lb1, "DescribeNetworkInterfaces", "ok");
    assert!(
        checks >= checks_at_first_expiry + 10.0,
        "checks stopped: {checks_at_first_expiry} then {checks}"
    );
    assert_eq!(failed_calls(&lb1), 0.0, "{:?}", lb1.status().unwrap().cloud);
    let cloud = lb1.status().unwrap().cloud.unwrap();
    assert_eq!(cloud.state, "claimed", "{cloud:?}");
    assert!(
        cloud
            .credentials
            .as_deref()
            .unwrap_or("")
            .starts_with("instance-metadata"),
        "{cloud:?}"
    );
    assert!(
        imds.unauthorized() >= 1,
        "no IMDS token expired during the test"
    );
    assert!(imds.token_puts() >= 2);
    stop_podlb(&lb1);
}

/// Kubernetes mode: the VIPs podlb allocates from its pool for Services of
/// type LoadBalancer are claimed on the ENI as they appear (the mover
/// follows each published snapshot's VIPs), not only the static ones.
#[test]
fn cloud_aws_claims_kubernetes_pool_vips() {
    require_netns!("cloud_aws_claims_kubernetes_pool_vips");
    use crate::kubernetes::{kube_table, lb_service, slice, start_api};
    use podlb_lab::demo::BACKENDS;
    let attach = Attach::from_name("af_packet").unwrap();
    let topo = lab_topology(&attach).unwrap();
    let be = topo.ns("be1").to_string();
    let nginx = start_nginx(&topo, &be, "be1", "be1");
    let (moto, url) = start_moto(&topo, None);
    let ids = ec2(&topo, &url, &["setup", VIP_S]);
    let (eni1, eni2, alloc) = (
        ids["eni1"].as_str().unwrap(),
        ids["eni2"].as_str().unwrap(),
        ids["alloc"].as_str().unwrap(),
    );
    let api = start_api(&topo, CLIENT);
    let kubeconfig = topo.dir().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig, "podlb-system").unwrap();
    let mut config = ConfigSpec::lab(attach.clone(), "nat");
    config.services.clear();
    config.extra = format!(
        "{}{}",
        kube_table(&kubeconfig, ""),
        aws_table(&url, eni1, alloc)
    );
    let env = [
        ("AWS_ACCESS_KEY_ID", "AKIDK8S"),
        ("AWS_SECRET_ACCESS_KEY", "s"),
    ];
    let exe = podlb_with_env(&topo, "podlb", &env);
    let podlb = Podlb::start(&topo, &lb_ns(&topo, &attach), &exe, &config).expect("podlb");
    let _log = LogOnPanic(vec![moto, nginx, podlb.proc().clone()]);

    let ips_on = |eni: &str| -> Vec<String> {
        let st = ec2(&topo, &url, &["state", alloc, eni1, eni2]);
        st["ips"][eni]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let wait_ip_on = |ip: &str| {
        let t0 = Instant::now();
        loop {
            let have = ips_on(eni1);
            if have.iter().any(|h| h == ip) {
                return;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(15),
                "{ip} not on {eni1}: {have:?}"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    let ingress = |name: &str| -> String {
        let t0 = Instant::now();
        loop {
            if let Some(ip) = api
                .get("v1", "services", "default", name)
                .and_then(|s| s.pointer("/status/loadBalancer/ingress/0/ip").cloned())
                .and_then(|v| v.as_str().map(String::from))
            {
                return ip;
            }
            assert!(t0.elapsed() < Duration::from_secs(15), "no VIP for {name}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let eps = [(BACKENDS[0], true, false)];
    for (i, name) in ["web", "api"].iter().enumerate() {
        api.create(
            "v1",
            "services",
            lb_service("default", name, "podlb.io/vip", serde_json::json!({}), 80),
        )
        .unwrap();
        api.create(
            "discovery.k8s.io/v1",
            "endpointslices",
            slice("default", name, &format!("{name}-1"), &eps, 80),
        )
        .unwrap();
        let vip = ingress(name);
        eprintln!("{name}: VIP {vip}");
        wait_ip_on(&vip);
        assert_eq!(ips_on(eni1).len(), 2 + i, "{:?}", ips_on(eni1));
    }
    let cloud = podlb.status().unwrap().cloud.unwrap();
    assert_eq!(cloud.state, "claimed", "{cloud:?}");
    assert_eq!(failed_calls(&podlb), 0.0, "{cloud:?}");
    stop_podlb(&podlb);
}
