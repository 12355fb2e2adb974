//! Backend health checks, the sans-IO half: what to probe ([`HealthCheck`],
//! in [`crate::model`]), the rise/fall state machine of one target
//! ([`TargetState`], HAProxy's `rise`/`fall`), and which backends a
//! snapshot keeps ([`filter_services`]), and the DNS check's messages
//! ([`dns`]). The probing itself (a tokio task per target, HTTP on hyper,
//! UDP datagrams) is `podlb::health`.
//!
//! New targets start *up* (docs/decisions.md, "Health checks: new targets
//! start up; all down fails open").

pub mod dns;

use std::net::SocketAddr;

use crate::model::{CheckKind, HealthCheck, ServiceConfig};
pub use crate::model::{
    DEFAULT_FALL, DEFAULT_HEALTH_INTERVAL as DEFAULT_INTERVAL,
    DEFAULT_HEALTH_TIMEOUT as DEFAULT_TIMEOUT, DEFAULT_RISE,
};

/// HTTP status a healthy backend answers with.
pub const DEFAULT_EXPECT_STATUS: u16 = 200;
/// HTTP path probed.
pub const DEFAULT_PATH: &str = "/";
/// What a UDP check sends when it is given nothing (the annotation `udp`):
/// one zero byte, as an empty datagram is ignored by many servers.
pub const DEFAULT_UDP_SEND: &[u8] = &[0];
/// Largest payload a UDP check sends or expects: one datagram in a
/// 1500-byte Ethernet frame (1500 − 20 IPv4 − 8 UDP).
pub const MAX_UDP_PAYLOAD: usize = 1472;

/// Bytes for `/status` and logs: printable ASCII as is, the rest escaped
/// (`\x00`), quoted; past 32 bytes cut, with the length.
pub fn show_bytes(b: &[u8]) -> String {
    const SHOWN: usize = 32;
    let head = &b[..b.len().min(SHOWN)];
    let text = head.escape_ascii().to_string();
    if b.len() > SHOWN {
        format!("\"{text}\"... ({} bytes)", b.len())
    } else {
        format!("\"{text}\"")
    }
}

/// Checks an HTTP check path: it goes into the request line verbatim, so it
/// must start with '/' and hold no whitespace or control characters (a CR or
/// LF would let the config inject headers). It is a request target in
/// origin form (RFC 9112 §3.2.1), so no fragment (`#`), and none of `"`,
/// `<`, `>` and `` ` ``, which RFC 3986 §2 leaves out of URIs (the HTTP
/// client refuses to send them unencoded).
pub fn check_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("{path:?} must start with '/'"));
    }
    if path.len() > 1024 {
        return Err(format!("{} bytes; at most 1024", path.len()));
    }
    if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{path:?} must not contain whitespace, CR, LF or control characters"
        ));
    }
    if path.contains(['#', '"', '<', '>', '`']) {
        return Err(format!(
            "{path:?} must not contain '#', '\"', '<', '>' or '`' (percent-encode them)"
        ));
    }
    Ok(())
}

impl HealthCheck {
    /// The address probed for `backend`: its IP, and the check's port if set.
    pub fn target(&self, backend: SocketAddr) -> SocketAddr {
        SocketAddr::new(backend.ip(), self.port.unwrap_or(backend.port()))
    }

    /// A one-line description for `/status` and logs, e.g.
    /// `http GET /healthz expect 200 every 1000ms timeout 500ms rise 2 fall 3`.
    pub fn summary(&self) -> String {
        let what = match &self.kind {
            CheckKind::Tcp => "tcp".to_string(),
            CheckKind::Http {
                path,
                expect_status,
            } => format!("http GET {path} expect {expect_status}"),
            CheckKind::Udp { send, expect } => match expect {
                Some(e) => format!("udp send {} expect {}", show_bytes(send), show_bytes(e)),
                None => format!("udp send {} expect any reply", show_bytes(send)),
            },
            CheckKind::Dns { name } => format!("dns A {name}"),
        };
        let port = self.port.map(|p| format!(" port {p}")).unwrap_or_default();
        format!(
            "{what}{port} every {}ms timeout {}ms rise {} fall {}",
            self.interval.as_millis(),
            self.timeout.as_millis(),
            self.rise,
            self.fall
        )
    }

    /// Reads the Service annotation `podlb.io/health-check`: `"tcp"`,
    /// `"http"` (path `/`), `"http:/path"`, `"udp"` (sends one zero byte,
    /// any reply passes), `"udp:<text>"` (sends the text), `"dns:<name>"`
    /// (queries `name`, type A) or `"none"`. Interval, timeout,
    /// rise, fall and port come from `defaults` (the `[kubernetes.health_check]`
    /// table), and so does `expect_status` when `defaults` is an HTTP check.
    /// `Ok(None)`: no health check.
    pub fn from_annotation(
        value: &str,
        defaults: &HealthCheck,
    ) -> Result<Option<HealthCheck>, String> {
        let v = value.trim();
        let expect_status = match &defaults.kind {
            CheckKind::Http { expect_status, .. } => *expect_status,
            _ => DEFAULT_EXPECT_STATUS,
        };
        let kind = match v {
            "none" => return Ok(None),
            "tcp" => CheckKind::Tcp,
            "http" => CheckKind::Http {
                path: DEFAULT_PATH.to_string(),
                expect_status,
            },
            _ => match v.strip_prefix("http:") {
                Some(path) => {
                    check_path(path).map_err(|e| format!("path {e}"))?;
                    CheckKind::Http {
                        path: path.to_string(),
                        expect_status,
                    }
                }
                None => annotation_udp(v).ok_or_else(|| {
                    format!(
                        "{value:?} is not a health check: use \"tcp\", \"http\", \"http:/path\", \"udp\", \"udp:<text>\", \"dns:<name>\" or \"none\""
                    )
                })??,
            },
        };
        Ok(Some(HealthCheck {
            kind,
            ..defaults.clone()
        }))
    }
}

/// The UDP kinds of the annotation (`v` trimmed): `None` if `v` is none of
/// them.
fn annotation_udp(v: &str) -> Option<Result<CheckKind, String>> {
    if v == "udp" {
        return Some(Ok(CheckKind::Udp {
            send: DEFAULT_UDP_SEND.to_vec(),
            expect: None,
        }));
    }
    if let Some(text) = v.strip_prefix("udp:") {
        return Some(match text.len() {
            0 => Err(
                "\"udp:\" needs text to send after the colon (plain \"udp\" sends one zero byte)"
                    .into(),
            ),
            n if n > MAX_UDP_PAYLOAD => {
                Err(format!("udp: {n} bytes to send; at most {MAX_UDP_PAYLOAD}"))
            }
            _ => Ok(CheckKind::Udp {
                send: text.as_bytes().to_vec(),
                expect: None,
            }),
        });
    }
    if v == "dns" {
        return Some(Err(
            "\"dns\" needs a name: \"dns:<name>\", e.g. \"dns:example.com\"".into(),
        ));
    }
    let name = v.strip_prefix("dns:")?;
    Some(
        dns::check_name(name)
            .map(|()| CheckKind::Dns {
                name: name.to_string(),
            })
            .map_err(|e| format!("dns name {e}")),
    )
}

/// The rise/fall state machine of one target (sans-IO).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetState {
    up: bool,
    /// Consecutive results that disagree with `up`.
    streak: u32,
    rise: u32,
    fall: u32,
}

impl TargetState {
    /// A new target: up (see the module doc).
    pub fn new(rise: u32, fall: u32) -> TargetState {
        TargetState {
            up: true,
            streak: 0,
            rise: rise.max(1),
            fall: fall.max(1),
        }
    }

    pub fn is_up(&self) -> bool {
        self.up
    }

    /// Records one probe result; returns the new state if it changed:
    /// `fall` consecutive failures bring an up target down, `rise`
    /// consecutive successes bring a down target up, and any result that
    /// agrees with the current state restarts the count.
    pub fn observe(&mut self, ok: bool) -> Option<bool> {
        if ok == self.up {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let need = if self.up { self.fall } else { self.rise };
        if self.streak >= need {
            self.up = ok;
            self.streak = 0;
            Some(ok)
        } else {
            None
        }
    }
}

/// Every (check, probed address) the services ask for.
pub fn health_targets(services: &[ServiceConfig]) -> Vec<(HealthCheck, SocketAddr)> {
    services
        .iter()
        .filter_map(|s| s.health_check.as_ref().map(|c| (c, &s.backends)))
        .flat_map(|(c, bs)| bs.iter().map(move |b| (c.clone(), c.target(b.addr))))
        .collect()
}

/// The services with the backends `is_up` rejects left out (a service
/// whose backends are *all* down keeps them all: fails open); also leaves out the
/// backends `held` names (they refused a connection) unless that would
/// leave a service none. Returns the names of the services that failed
/// open (every backend down by its health check).
pub fn filter_services(
    services: &[ServiceConfig],
    is_up: impl Fn(&HealthCheck, SocketAddr) -> bool,
    held: impl Fn(SocketAddr) -> bool,
) -> (Vec<ServiceConfig>, Vec<String>) {
    let mut fail_open = Vec::new();
    let out = services
        .iter()
        .map(|s| {
            let mut out = s.clone();
            if let Some(c) = &s.health_check {
                let up: Vec<_> = s
                    .backends
                    .iter()
                    .filter(|b| is_up(c, c.target(b.addr)))
                    .cloned()
                    .collect();
                if up.is_empty() && !s.backends.is_empty() {
                    fail_open.push(s.name.clone());
                } else {
                    out.backends = up;
                }
            }
            if out.backends.iter().any(|b| held(b.addr)) {
                let kept: Vec<_> = out
                    .backends
                    .iter()
                    .filter(|b| !held(b.addr))
                    .cloned()
                    .collect();
                if !kept.is_empty() {
                    out.backends = kept;
                }
            }
            out
        })
        .collect();
    (out, fail_open)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use std::time::Duration;

    #[test]
    fn check_paths() {
        for ok in ["/", "/healthz?x=1&y=%3C2%3E", "/a%23b", "/{}|^\\", "/é"] {
            assert_eq!(check_path(ok), Ok(()), "{ok}");
        }
        for bad in [
            "healthz",
            "/a b",
            "/a\r\nX: y",
            "/a#b",
            "/a<b",
            "/a?b>",
            "/a`b",
            "/?q=\"x\"",
        ] {
            assert!(check_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rise_and_fall() {
        let mut s = TargetState::new(2, 3);
        assert!(s.is_up(), "new targets start up");
        assert_eq!(s.observe(false), None);
        assert_eq!(s.observe(false), None);
        assert_eq!(s.observe(false), Some(false));
        assert_eq!(s.observe(false), None, "already down");
        assert_eq!(s.observe(true), None);
        assert_eq!(s.observe(true), Some(true));
        assert_eq!(s.observe(true), None);
        assert!(s.is_up());
    }

    #[test]
    fn alternating_results_never_flip() {
        let mut s = TargetState::new(2, 2);
        for i in 0..100 {
            assert_eq!(s.observe(i % 2 == 0), None, "step {i}");
        }
        assert!(s.is_up());
        // And from down.
        s.observe(false);
        s.observe(false);
        assert!(!s.is_up());
        for i in 0..100 {
            assert_eq!(s.observe(i % 2 == 0), None, "step {i}");
        }
        assert!(!s.is_up());
    }

    #[test]
    fn agreeing_result_restarts_the_count() {
        let mut s = TargetState::new(1, 3);
        s.observe(false);
        s.observe(false);
        s.observe(true);
        assert_eq!(s.observe(false), None);
        assert_eq!(s.observe(false), None);
        assert_eq!(s.observe(false), Some(false));
        assert_eq!(s.observe(true), Some(true), "rise 1");
    }

    #[test]
    fn annotation() {
        let d = HealthCheck {
            interval: Duration::from_millis(300),
            ..HealthCheck::default()
        };
        assert_eq!(HealthCheck::from_annotation("none", &d), Ok(None));
        assert_eq!(HealthCheck::from_annotation("tcp", &d), Ok(Some(d.clone())));
        let h = HealthCheck::from_annotation(" http:/healthz ", &d)
            .unwrap()
            .unwrap();
        assert_eq!(
            h.kind,
            CheckKind::Http {
                path: "/healthz".into(),
                expect_status: 200
            }
        );
        assert_eq!(h.interval, Duration::from_millis(300));
        let h = HealthCheck::from_annotation("http", &d).unwrap().unwrap();
        assert!(matches!(h.kind, CheckKind::Http { ref path, .. } if path == "/"));
        // expect_status comes from HTTP defaults.
        let hd = HealthCheck {
            kind: CheckKind::Http {
                path: "/x".into(),
                expect_status: 204,
            },
            ..HealthCheck::default()
        };
        let h = HealthCheck::from_annotation("http:/y", &hd)
            .unwrap()
            .unwrap();
        assert_eq!(
            h.kind,
            CheckKind::Http {
                path: "/y".into(),
                expect_status: 204
            }
        );
        assert_eq!(
            HealthCheck::from_annotation("tcp", &hd)
                .unwrap()
                .unwrap()
                .kind,
            CheckKind::Tcp
        );
        for bad in [
            "",
            "http:",
            "http:healthz",
            "http:/a b",
            "http:/a\r\nX: y",
            "TCP",
        ] {
            assert!(HealthCheck::from_annotation(bad, &d).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn udp_and_dns_annotations() {
        let d = HealthCheck {
            interval: Duration::from_millis(300),
            port: Some(5353),
            ..HealthCheck::default()
        };
        let kind = |v: &str| HealthCheck::from_annotation(v, &d).map(|c| c.unwrap().kind);
        assert_eq!(
            kind("udp"),
            Ok(CheckKind::Udp {
                send: vec![0],
                expect: None
            })
        );
        assert_eq!(
            kind(" udp:ping "),
            Ok(CheckKind::Udp {
                send: b"ping".to_vec(),
                expect: None
            })
        );
        assert_eq!(
            kind("udp:a b:c"),
            Ok(CheckKind::Udp {
                send: b"a b:c".to_vec(),
                expect: None
            }),
            "the text is taken as is"
        );
        assert_eq!(
            kind("dns:example.com"),
            Ok(CheckKind::Dns {
                name: "example.com".into()
            })
        );
        assert_eq!(kind("dns:."), Ok(CheckKind::Dns { name: ".".into() }));
        // The rest comes from the defaults.
        let h = HealthCheck::from_annotation("dns:kube-dns.local.", &d)
            .unwrap()
            .unwrap();
        assert_eq!((h.interval, h.port), (d.interval, d.port));
        assert_eq!(h.kind.protocol(), crate::model::Protocol::Udp);

        let long = format!("udp:{}", "x".repeat(MAX_UDP_PAYLOAD + 1));
        for (bad, why) in [
            ("udp:", "needs text"),
            ("dns", "needs a name"),
            ("dns:", "empty"),
            ("dns:exa mple.com", "contains ' '"),
            ("dns:a..b", "empty label"),
            ("UDP", "not a health check"),
            ("udpx", "not a health check"),
            ("dns-example.com", "not a health check"),
            (long.as_str(), "at most 1472"),
        ] {
            let e = HealthCheck::from_annotation(bad, &d).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }

    #[test]
    fn udp_and_dns_summaries() {
        let c = |kind| HealthCheck {
            kind,
            ..HealthCheck::default()
        };
        assert_eq!(
            c(CheckKind::Udp {
                send: b"ping\0\"".to_vec(),
                expect: Some(b"pong".to_vec())
            })
            .summary(),
            "udp send \"ping\\x00\\\"\" expect \"pong\" every 1000ms timeout 500ms rise 2 fall 3"
        );
        assert!(c(CheckKind::Udp {
            send: vec![b'a'; 40],
            expect: None
        })
        .summary()
        .starts_with(&format!(
            "udp send \"{}\"... (40 bytes) expect any reply",
            "a".repeat(32)
        )));
        assert!(c(CheckKind::Dns {
            name: "example.com".into()
        })
        .summary()
        .starts_with("dns A example.com every"));
    }

    #[test]
    fn kinds_know_their_protocol() {
        use crate::model::Protocol;
        assert_eq!(CheckKind::Tcp.protocol(), Protocol::Tcp);
        let http = CheckKind::Http {
            path: "/".into(),
            expect_status: 200,
        };
        assert_eq!(http.protocol(), Protocol::Tcp);
        let udp = CheckKind::Udp {
            send: vec![0],
            expect: None,
        };
        assert_eq!(udp.protocol(), Protocol::Udp);
        let dns = CheckKind::Dns { name: ".".into() };
        assert_eq!(dns.protocol(), Protocol::Udp);
        assert_eq!(
            [&CheckKind::Tcp, &http, &udp, &dns].map(CheckKind::as_str),
            ["tcp", "http", "udp", "dns"]
        );
    }

    #[test]
    fn target_uses_the_port_override() {
        let b = SocketAddr::from((Ipv4Addr::new(198, 18, 0, 21), 80));
        let mut c = HealthCheck::default();
        assert_eq!(c.target(b), b);
        c.port = Some(8081);
        assert_eq!(c.target(b).port(), 8081);
        assert!(c.summary().contains("port 8081"), "{}", c.summary());
    }

    #[test]
    fn down_backends_leave_and_all_down_fails_open() {
        let c = HealthCheck::default();
        let with_port = HealthCheck {
            port: Some(9000),
            ..HealthCheck::default()
        };
        let services = vec![
            svc("checked", Some(c.clone()), &[1, 2, 3]),
            svc("unchecked", None, &[1, 2]),
            svc("all-down", Some(c.clone()), &[2]),
            svc("override", Some(with_port.clone()), &[1, 2]),
            svc("empty", Some(c.clone()), &[]),
        ];
        // Port 2 is down for `c`; port 9000 of .21 is down for `with_port`.
        let (out, fail_open) = filter_services(
            &services,
            |chk, a| {
                if *chk == with_port {
                    a.port() != 9000
                } else {
                    a.port() != 2
                }
            },
            |_| false,
        );
        let ports =
            |s: &ServiceConfig| s.backends.iter().map(|b| b.addr.port()).collect::<Vec<_>>();
        assert_eq!(ports(&out[0]), vec![1, 3]);
        assert_eq!(ports(&out[1]), vec![1, 2], "no check: all kept");
        assert_eq!(ports(&out[2]), vec![2], "all down: fail open");
        assert_eq!(
            ports(&out[3]),
            vec![1, 2],
            "the check's port decides, for every backend: fail open"
        );
        assert!(out[4].backends.is_empty());
        assert_eq!(
            fail_open,
            vec!["all-down".to_string(), "override".to_string()]
        );
        assert_eq!(health_targets(&services).len(), 3 + 1 + 2);
        assert!(health_targets(&services).contains(&(
            with_port.clone(),
            SocketAddr::from((Ipv4Addr::new(198, 18, 0, 21), 9000))
        )));
    }

    fn svc(name: &str, check: Option<HealthCheck>, ports: &[u16]) -> ServiceConfig {
        ServiceConfig {
            name: name.into(),
            vip: Ipv4Addr::new(198, 18, 0, 100).into(),
            port: 80,
            mode: crate::model::Mode::Nat,
            backends: ports
                .iter()
                .map(|&p| crate::model::BackendConfig {
                    addr: SocketAddr::from((Ipv4Addr::new(198, 18, 0, 21), p)),
                    weight: 1,
                    vtep: None,
                    vtep_mac: None,
                })
                .collect(),
            table_size: 65537,
            health_check: check,
            vxlan_port: crate::model::DEFAULT_VXLAN_PORT,
            vni: crate::model::DEFAULT_VNI,
            mss_clamp: None,
            source_ranges: Vec::new(),
            affinity: Default::default(),
            udp_hash: Default::default(),
            protocol: Default::default(),
        }
    }
}
