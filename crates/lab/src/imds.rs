//! A small EC2 instance metadata service (IMDSv2) for tests: the session
//! token protocol, the instance's MAC and ENI, and instance profile
//! credentials that are new on every fetch and expire after a set time.
//!
//! The token protocol, as EC2 documents it:
//! - `PUT /latest/api/token` with `X-aws-ec2-metadata-token-ttl-seconds`
//!   (1..=21600) answers a token; without the header, or out of range, 400.
//! - every `GET /latest/meta-data/...` needs `X-aws-ec2-metadata-token`
//!   with a token not yet expired, else 401 (IMDSv1 is off).
//! - a `PUT` carrying `X-Forwarded-For` is refused (403): a proxied request.
//!
//! Paths served: `mac`, `network/interfaces/macs/<mac>/interface-id`,
//! `iam/security-credentials/` (the role name) and
//! `iam/security-credentials/<role>` (`Code`, `AccessKeyId`,
//! `SecretAccessKey`, `Token`, `Expiration`); anything else 404. Tokens can
//! be made to expire sooner than asked ([`ImdsSpec::token_ttl_cap`]) to
//! exercise a client's renewal on 401. Every credential issue is recorded
//! ([`FakeImds::issued`]).

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime};

use podlb::http::server::{self, Body, Limits};
use podlb::http::{self, Incoming, Method, StatusCode};
use tokio::sync::Notify;

const LIMITS: Limits = Limits {
    max_connections: 256,
    header_timeout: Some(Duration::from_secs(5)),
    connection_timeout: Some(Duration::from_secs(30)),
    max_head: 16 * 1024,
    keep_alive: true,
    max_per_peer: None,
};
const MAX_TOKEN_TTL: u64 = 21_600;

/// One set of credentials to hand out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImdsCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub token: String,
}

/// What the instance looks like.
#[derive(Debug, Clone)]
pub struct ImdsSpec {
    pub mac: String,
    pub eni: String,
    /// The instance profile's role (`None`: no role, the listing is 404).
    pub role: Option<String>,
    /// Handed out in turn, one per credentials fetch (cycling).
    pub credentials: Vec<ImdsCredentials>,
    /// Each credentials fetch's `Expiration` is this far ahead.
    pub lifetime: Duration,
    /// Tokens expire after at most this (`None`: as asked).
    pub token_ttl_cap: Option<Duration>,
}

/// A credentials fetch answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub access_key_id: String,
    pub at: SystemTime,
    pub expires: SystemTime,
}

struct Shared {
    spec: ImdsSpec,
    /// Token → when it expires.
    tokens: Mutex<HashMap<String, Instant>>,
    issued: Mutex<Vec<Issue>>,
    next_token: AtomicU64,
    unauthorized: AtomicU64,
    token_puts: AtomicU64,
}

/// A running fake IMDS; dropping it stops it.
pub struct FakeImds {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Arc<Notify>,
    thread: Option<JoinHandle<()>>,
}

impl FakeImds {
    /// Serves on a listener the caller bound (in any namespace).
    pub fn from_listener(listener: TcpListener, spec: ImdsSpec) -> io::Result<FakeImds> {
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let shared = Arc::new(Shared {
            spec,
            tokens: Mutex::new(HashMap::new()),
            issued: Mutex::new(Vec::new()),
            next_token: AtomicU64::new(1),
            unauthorized: AtomicU64::new(0),
            token_puts: AtomicU64::new(0),
        });
        let shutdown = Arc::new(Notify::new());
        let rt = http::runtime()?;
        let (sh, down) = (shared.clone(), shutdown.clone());
        let thread = thread::Builder::new()
            .name("fake-imds".into())
            .spawn(move || {
                rt.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                        return;
                    };
                    let handler = move |req| {
                        let sh = sh.clone();
                        async move { answer(&sh, &req) }
                    };
                    let stats = Arc::new(server::Stats::default());
                    server::serve(listener, LIMITS, stats, handler, down.notified()).await;
                });
                rt.shutdown_timeout(Duration::from_millis(100));
            })?;
        Ok(FakeImds {
            addr,
            shared,
            shutdown,
            thread: Some(thread),
        })
    }

    /// `http://IP:PORT` (for `AWS_EC2_METADATA_SERVICE_ENDPOINT`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every credentials fetch answered so far.
    pub fn issued(&self) -> Vec<Issue> {
        self.shared.issued.lock().unwrap().clone()
    }

    /// GETs refused for a missing, unknown or expired token.
    pub fn unauthorized(&self) -> u64 {
        self.shared.unauthorized.load(Relaxed)
    }

    /// Tokens handed out.
    pub fn token_puts(&self) -> u64 {
        self.shared.token_puts.load(Relaxed)
    }
}

impl Drop for FakeImds {
    fn drop(&mut self) {
        self.shutdown.notify_one();
        if let Some(h) = self.thread.take() {
            let deadline = Instant::now() + Duration::from_secs(2);
            while !h.is_finished() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(5));
            }
            if h.is_finished() {
                let _ = h.join();
            }
        }
    }
}

fn text(code: u16, body: String) -> http::Response<Body> {
    let code = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    server::full(code, "text/plain", body)
}

fn header<'a>(req: &'a http::Request<Incoming>, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

fn answer(sh: &Shared, req: &http::Request<Incoming>) -> http::Response<Body> {
    let path = req.uri().path();
    if req.method() == Method::PUT && path == "/latest/api/token" {
        if header(req, "x-forwarded-for").is_some() {
            return text(403, "Forbidden".into());
        }
        let ttl = header(req, "x-aws-ec2-metadata-token-ttl-seconds")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|t| (1..=MAX_TOKEN_TTL).contains(t));
        let Some(ttl) = ttl else {
            return text(400, "Bad Request".into());
        };
        let mut life = Duration::from_secs(ttl);
        if let Some(cap) = sh.spec.token_ttl_cap {
            life = life.min(cap);
        }
        let n = sh.next_token.fetch_add(1, Relaxed);
        let token = format!("imds-token-{n}-{}", std::process::id());
        sh.tokens
            .lock()
            .unwrap()
            .insert(token.clone(), Instant::now() + life);
        sh.token_puts.fetch_add(1, Relaxed);
        return text(200, token);
    }
    if req.method() != Method::GET {
        return text(405, "Method Not Allowed".into());
    }
    let valid = header(req, "x-aws-ec2-metadata-token").is_some_and(|t| {
        sh.tokens
            .lock()
            .unwrap()
            .get(t)
            .is_some_and(|until| Instant::now() < *until)
    });
    if !valid {
        sh.unauthorized.fetch_add(1, Relaxed);
        return text(401, "Unauthorized".into());
    }
    let Some(p) = path.strip_prefix("/latest/meta-data/") else {
        return text(404, "Not Found".into());
    };
    let spec = &sh.spec;
    if p == "mac" {
        return text(200, spec.mac.clone());
    }
    if p == format!("network/interfaces/macs/{}/interface-id", spec.mac) {
        return text(200, spec.eni.clone());
    }
    let Some(role) = &spec.role else {
        return text(404, "Not Found".into());
    };
    if p == "iam/security-credentials/" {
        return text(200, role.clone());
    }
    if p == format!("iam/security-credentials/{role}") && !spec.credentials.is_empty() {
        return text(200, issue(sh));
    }
    text(404, "Not Found".into())
}

/// The next credentials, expiring `lifetime` from now.
fn issue(sh: &Shared) -> String {
    let mut issued = sh.issued.lock().unwrap();
    let c = &sh.spec.credentials[issued.len() % sh.spec.credentials.len()];
    let at = SystemTime::now();
    let expires = at + sh.spec.lifetime;
    let rfc3339 = |t: SystemTime| {
        jiff::Timestamp::try_from(t)
            .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
            .unwrap_or_default()
    };
    issued.push(Issue {
        access_key_id: c.access_key_id.clone(),
        at,
        expires,
    });
    serde_json::json!({
        "Code": "Success",
        "LastUpdated": rfc3339(at),
        "Type": "AWS-HMAC",
        "AccessKeyId": c.access_key_id,
        "SecretAccessKey": c.secret_access_key,
        "Token": c.token,
        "Expiration": rfc3339(expires),
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use podlb::cloud::credentials::Imds;
    use podlb::cloud::http::Endpoint;

    fn start(cap: Option<Duration>) -> FakeImds {
        let spec = ImdsSpec {
            mac: "0e:00:00:00:00:01".into(),
            eni: "eni-0abc".into(),
            role: Some("podlb-node".into()),
            credentials: vec![
                ImdsCredentials {
                    access_key_id: "ASIA1".into(),
                    secret_access_key: "s1".into(),
                    token: "t1".into(),
                },
                ImdsCredentials {
                    access_key_id: "ASIA2".into(),
                    secret_access_key: "s2".into(),
                    token: "t2".into(),
                },
            ],
            lifetime: Duration::from_secs(600),
            token_ttl_cap: cap,
        };
        FakeImds::from_listener(TcpListener::bind("127.0.0.1:0").unwrap(), spec).unwrap()
    }

    /// podlb's client against the fake: the ENI, credentials that rotate,
    /// and a new token after a 401.
    #[test]
    fn podlb_reads_the_fake_imds() {
        let f = start(Some(Duration::from_millis(300)));
        let mut c = Imds::new(Endpoint::parse(&f.url()).unwrap());
        assert_eq!(c.interface_id().unwrap(), "eni-0abc");
        let a = c.role_credentials(SystemTime::now()).unwrap();
        assert_eq!(a.creds.access_key_id, "ASIA1");
        assert_eq!(a.creds.session_token.as_deref(), Some("t1"));
        let left = a.valid_for.unwrap();
        assert!(left > Duration::from_secs(590) && left <= Duration::from_secs(600));
        assert_eq!(f.token_puts(), 1);
        assert_eq!(f.unauthorized(), 0);
        // The token expires (capped at 300 ms): a 401, a new token, done.
        thread::sleep(Duration::from_millis(400));
        let b = c.role_credentials(SystemTime::now()).unwrap();
        assert_eq!(b.creds.access_key_id, "ASIA2");
        assert_eq!(f.unauthorized(), 1);
        assert_eq!(f.token_puts(), 2);
        assert_eq!(f.issued().len(), 2);
    }

    #[test]
    fn the_token_protocol_is_enforced() {
        let f = start(None);
        let ep = Endpoint::parse(&f.url()).unwrap();
        let t = Duration::from_secs(2);
        let req = |m: Method, path: &str, h: &[(&str, String)]| {
            podlb::cloud::http::request(m, &ep, path, h, "", t).unwrap()
        };
        // IMDSv1 (no token) is refused.
        assert_eq!(req(Method::GET, "/latest/meta-data/mac", &[]).status, 401);
        assert_eq!(req(Method::PUT, "/latest/api/token", &[]).status, 400);
        let ttl = |v: &str| ("X-aws-ec2-metadata-token-ttl-seconds", v.to_string());
        assert_eq!(
            req(Method::PUT, "/latest/api/token", &[ttl("0")]).status,
            400
        );
        assert_eq!(
            req(Method::PUT, "/latest/api/token", &[ttl("21601")]).status,
            400
        );
        let proxied = [ttl("60"), ("X-Forwarded-For", "10.0.0.1".into())];
        assert_eq!(req(Method::PUT, "/latest/api/token", &proxied).status, 403);
        let token = req(Method::PUT, "/latest/api/token", &[ttl("60")]).body;
        let auth = [("X-aws-ec2-metadata-token", token)];
        let r = req(Method::GET, "/latest/meta-data/mac", &auth);
        assert_eq!((r.status, r.body.as_str()), (200, "0e:00:00:00:00:01"));
        let wrong = [("X-aws-ec2-metadata-token", "nope".to_string())];
        assert_eq!(
            req(Method::GET, "/latest/meta-data/mac", &wrong).status,
            401
        );
        assert_eq!(
            req(Method::GET, "/latest/meta-data/nothing", &auth).status,
            404
        );
    }
}
