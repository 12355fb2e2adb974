//! Backend health checks, the sans-IO half: what to probe ([`HealthCheck`],
//! in [`crate::model`]), the rise/fall state machine of one target
//! ([`TargetState`], HAProxy's `rise`/`fall`), and which backends a
//! snapshot keeps ([`filter_services`]). The probing itself (a tokio task
//! per target, HTTP on hyper) is `podlb::health`.
//!
//! New targets start *up* (docs/decisions.md, "Health checks: new targets
//! start up; all down fails open").

use std::net::SocketAddrV4;

use crate::model::{CheckKind, HealthCheck, ServiceConfig};
pub use crate::model::{
    DEFAULT_FALL, DEFAULT_HEALTH_INTERVAL as DEFAULT_INTERVAL,
    DEFAULT_HEALTH_TIMEOUT as DEFAULT_TIMEOUT, DEFAULT_RISE,
};

/// HTTP status a healthy backend answers with.
pub const DEFAULT_EXPECT_STATUS: u16 = 200;
/// HTTP path probed.
pub const DEFAULT_PATH: &str = "/";

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
    pub fn target(&self, backend: SocketAddrV4) -> SocketAddrV4 {
        SocketAddrV4::new(*backend.ip(), self.port.unwrap_or(backend.port()))
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
                Some(e) => format!("udp send {} bytes expect {} bytes", send.len(), e.len()),
                None => format!("udp send {} bytes expect a reply", send.len()),
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
    /// `"http"` (path `/`), `"http:/path"` or `"none"`. Interval, timeout,
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
                None => {
                    return Err(format!(
                        "{value:?} is not a health check: use \"tcp\", \"http\", \"http:/path\" or \"none\""
                    ))
                }
            },
        };
        Ok(Some(HealthCheck {
            kind,
            ..defaults.clone()
        }))
    }
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
pub fn health_targets(services: &[ServiceConfig]) -> Vec<(HealthCheck, SocketAddrV4)> {
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
    is_up: impl Fn(&HealthCheck, SocketAddrV4) -> bool,
    held: impl Fn(SocketAddrV4) -> bool,
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
            "udp",
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
    fn target_uses_the_port_override() {
        let b = SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 21), 80);
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
            SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 21), 9000)
        )));
    }

    fn svc(name: &str, check: Option<HealthCheck>, ports: &[u16]) -> ServiceConfig {
        ServiceConfig {
            name: name.into(),
            vip: Ipv4Addr::new(198, 18, 0, 100),
            port: 80,
            mode: crate::model::Mode::Nat,
            backends: ports
                .iter()
                .map(|&p| crate::model::BackendConfig {
                    addr: SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 21), p),
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
