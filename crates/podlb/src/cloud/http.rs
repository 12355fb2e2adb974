//! The cloud API's HTTP: one blocking request per connection (`Connection:
//! close`) on [`crate::http::client`], over TCP for `http://` (a local
//! emulator such as moto) or rustls for `https://` (the platform's
//! verifier), with a connect and an exchange timeout. It runs on the
//! `podlb-cloud` thread only.

use std::net::ToSocketAddrs;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http_body_util::Full;

use crate::http::{client, header, Bytes, Method};

/// Largest response body read (EC2 answers for one ENI or one address are
/// a few KiB).
const MAX_RESPONSE: usize = 1 << 20;

/// A parsed `http(s)://host[:port][/path]` endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(format!("{url:?} must start with http:// or https://"));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let default = if tls { 443 } else { 80 };
        let (host, port) = match authority.rsplit_once(':') {
            // (IPv6 literals are not supported: EC2 endpoints are names.)
            Some((h, p)) => match p.parse::<u16>() {
                Ok(p) if p > 0 => (h, p),
                _ => return Err(format!("{url:?}: bad port {p:?}")),
            },
            None => (authority, default),
        };
        if host.is_empty() || host.contains(['@', ' ', '?', '#']) {
            return Err(format!("{url:?}: bad host"));
        }
        Ok(Endpoint {
            tls,
            host: host.to_string(),
            port,
            path: path.to_string(),
        })
    }

    /// The `Host` header value (with the port unless it is the default).
    pub fn host_header(&self) -> String {
        let default = if self.tls { 443 } else { 80 };
        if self.port == default {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// A response: status and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

fn tls_config() -> Result<Arc<rustls::ClientConfig>, String> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            use rustls_platform_verifier::BuilderVerifierExt;
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("TLS setup: {e}"))?
                .with_platform_verifier()
                .map_err(|e| format!("TLS roots: {e}"))
                .map(|b| Arc::new(b.with_no_client_auth()))
        })
        .clone()
}

/// POSTs `body` to `ep` with `headers` (Host, Content-Length, Connection
/// and User-Agent are added). `timeout` bounds the connect, and then the
/// exchange. Blocking: it runs the request on a runtime of its own.
pub fn post(
    ep: &Endpoint,
    headers: &[(&str, String)],
    body: &str,
    timeout: Duration,
) -> Result<Response, String> {
    request(Method::POST, ep, &ep.path, headers, body, timeout)
}

/// Any method to `path` on `ep`'s host (the instance metadata's PUT and
/// GETs); otherwise as [`post`].
pub fn request(
    method: Method,
    ep: &Endpoint,
    path: &str,
    headers: &[(&str, String)],
    body: &str,
    timeout: Duration,
) -> Result<Response, String> {
    let addrs: Vec<_> = (ep.host.as_str(), ep.port)
        .to_socket_addrs()
        .map_err(|e| format!("resolve {}: {e}", ep.host))?
        .collect();
    let rt = crate::http::runtime().map_err(|e| format!("runtime: {e}"))?;
    rt.block_on(async {
        let mut last = format!("resolve {}: no address", ep.host);
        let mut tcp = None;
        for a in addrs {
            match client::connect(a, timeout).await {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = e.to_string(),
            }
        }
        let tcp = tcp.ok_or(last)?;
        let mut conn = if ep.tls {
            let name = rustls::pki_types::ServerName::try_from(ep.host.clone())
                .map_err(|e| format!("TLS server name {}: {e}", ep.host))?;
            let tls = tokio::time::timeout(
                timeout,
                tokio_rustls::TlsConnector::from(tls_config()?).connect(name, tcp),
            )
            .await
            .map_err(|_| "TLS handshake timed out".to_string())?
            .map_err(|e| format!("TLS: {e}"))?;
            client::Conn::handshake(tls).await
        } else {
            client::Conn::handshake(tcp).await
        }
        .map_err(|e| e.to_string())?;
        let mut req = client::request(method, path, &ep.host_header())
            .header(header::CONNECTION, "close")
            .header(header::USER_AGENT, USER_AGENT);
        for (k, v) in headers {
            req = req.header(*k, v.as_str());
        }
        let req = req
            .body(Full::new(Bytes::copy_from_slice(body.as_bytes())))
            .map_err(|e| format!("request: {e}"))?;
        let r = tokio::time::timeout(timeout, conn.fetch(req, MAX_RESPONSE))
            .await
            .map_err(|_| format!("no response within {} ms", timeout.as_millis()))?
            .map_err(|e| match e {
                client::Error::TooLarge(_) => "response too large".to_string(),
                e => format!("receive: {e}"),
            })?;
        Ok(Response {
            status: r.status.as_u16(),
            body: r.text(),
        })
    })
}

const USER_AGENT: &str = concat!("podlb/", env!("CARGO_PKG_VERSION"));

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn endpoints() {
        let e = Endpoint::parse("http://127.0.0.1:5000").unwrap();
        assert_eq!(
            (e.tls, e.host.as_str(), e.port, e.path.as_str()),
            (false, "127.0.0.1", 5000, "/")
        );
        assert_eq!(e.host_header(), "127.0.0.1:5000");
        let e = Endpoint::parse("https://ec2.us-east-1.amazonaws.com").unwrap();
        assert_eq!((e.tls, e.port), (true, 443));
        assert_eq!(e.host_header(), "ec2.us-east-1.amazonaws.com");
        assert!(Endpoint::parse("ftp://x").is_err());
        assert!(Endpoint::parse("http://h:0").is_err());
        assert!(Endpoint::parse("http://h:99999").is_err());
        assert!(Endpoint::parse("http://").is_err());
    }

    /// A round trip against a one-shot server on loopback.
    #[test]
    fn post_over_tcp() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            while !got.ends_with(b"Action=X") {
                let n = s.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .unwrap();
            String::from_utf8(got).unwrap()
        });
        let ep = Endpoint::parse(&format!("http://127.0.0.1:{port}")).unwrap();
        let r = post(
            &ep,
            &[("X-Test", "1".into())],
            "Action=X",
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "ok"));
        let req = server.join().unwrap();
        assert!(req.starts_with("POST / HTTP/1.1\r\n"));
        assert!(req.contains(&format!("Host: 127.0.0.1:{port}\r\n")));
        assert!(req.contains("Content-Length: 8\r\n"));
        assert!(req.contains("X-Test: 1\r\n"));
    }
}
