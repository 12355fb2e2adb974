//! A minimal blocking HTTP/1.1 client for the cloud API: one POST per
//! connection (`Connection: close`), over TCP for `http://` (a local
//! emulator such as moto) or rustls for `https://`, with connect, read and
//! write timeouts. It runs on the `podlb-cloud` thread only.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

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

trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

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

/// POSTs `body` to `ep` with `headers` (Host, Content-Length and
/// Connection are added). `timeout` bounds the connect and each read and
/// write.
pub fn post(
    ep: &Endpoint,
    headers: &[(&str, String)],
    body: &str,
    timeout: Duration,
) -> Result<Response, String> {
    let addrs: Vec<_> = (ep.host.as_str(), ep.port)
        .to_socket_addrs()
        .map_err(|e| format!("resolve {}: {e}", ep.host))?
        .collect();
    let mut last = format!("resolve {}: no address", ep.host);
    let mut tcp = None;
    for a in addrs {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(s) => {
                tcp = Some(s);
                break;
            }
            Err(e) => last = format!("connect {a}: {e}"),
        }
    }
    let tcp = tcp.ok_or(last)?;
    tcp.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    tcp.set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let _ = tcp.set_nodelay(true);
    let mut stream: Box<dyn Stream> = if ep.tls {
        let name = rustls::pki_types::ServerName::try_from(ep.host.clone())
            .map_err(|e| format!("TLS server name {}: {e}", ep.host))?;
        let conn =
            rustls::ClientConnection::new(tls_config()?, name).map_err(|e| format!("TLS: {e}"))?;
        Box::new(rustls::StreamOwned::new(conn, tcp))
    } else {
        Box::new(tcp)
    };
    let mut req = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\nConnection: close\r\nUser-Agent: podlb/{}\r\n",
        ep.path,
        ep.host_header(),
        body.len(),
        env!("CARGO_PKG_VERSION")
    );
    for (k, v) in headers {
        req.push_str(k);
        req.push_str(": ");
        req.push_str(v);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    req.push_str(body);
    stream
        .write_all(req.as_bytes())
        .and_then(|()| stream.flush())
        .map_err(|e| format!("send: {e}"))?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                raw.extend_from_slice(&buf[..n]);
                if raw.len() > MAX_RESPONSE {
                    return Err("response too large".into());
                }
                if let Some(r) = parse_response(&raw, false)? {
                    return Ok(r);
                }
            }
            // A TLS peer that closes without close_notify: use what came.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(format!("receive: {e}")),
        }
    }
    parse_response(&raw, true)?.ok_or_else(|| "connection closed before a full response".into())
}

/// Parses a complete response out of `raw`; `Ok(None)` while more bytes
/// are needed. `eof`: the connection is closed (a body without length ends
/// there).
pub fn parse_response(raw: &[u8], eof: bool) -> Result<Option<Response>, String> {
    let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if eof {
            Err("truncated response head".into())
        } else {
            Ok(None)
        };
    };
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| "response head is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.split_whitespace();
    let status = match (parts.next(), parts.next()) {
        (Some(v), Some(code)) if v.starts_with("HTTP/1.") => code
            .parse::<u16>()
            .map_err(|_| format!("bad status line {status_line:?}"))?,
        _ => return Err(format!("bad status line {status_line:?}")),
    };
    let mut length = None;
    let mut chunked = false;
    for l in lines {
        let Some((k, v)) = l.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        if k.eq_ignore_ascii_case("content-length") {
            length = Some(v.parse::<usize>().map_err(|_| "bad Content-Length")?);
        } else if k.eq_ignore_ascii_case("transfer-encoding") {
            chunked = v.to_ascii_lowercase().contains("chunked");
        }
    }
    let rest = &raw[end + 4..];
    let body = if chunked {
        match dechunk(rest)? {
            Some(b) => b,
            None if eof => return Err("truncated chunked body".into()),
            None => return Ok(None),
        }
    } else if let Some(n) = length {
        if rest.len() < n {
            return if eof {
                Err("truncated body".into())
            } else {
                Ok(None)
            };
        }
        rest[..n].to_vec()
    } else if eof {
        rest.to_vec()
    } else {
        return Ok(None);
    };
    Ok(Some(Response {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    }))
}

/// Decodes a chunked body; `Ok(None)` while incomplete.
fn dechunk(mut b: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let size_s = std::str::from_utf8(&b[..eol]).map_err(|_| "bad chunk size")?;
        let size_s = size_s.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_s, 16).map_err(|_| "bad chunk size")?;
        b = &b[eol + 2..];
        if size == 0 {
            return Ok(Some(out));
        }
        if b.len() < size + 2 {
            return Ok(None);
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn responses() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc", false)
            .unwrap()
            .unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "abc"));
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabc", false).unwrap(),
            None
        );
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabc", true).is_err());
        let r = parse_response(
            b"HTTP/1.1 400 Bad\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!((r.status, r.body.as_str()), (400, "abcde"));
        let r = parse_response(b"HTTP/1.0 503 x\r\n\r\nbody", true)
            .unwrap()
            .unwrap();
        assert_eq!((r.status, r.body.as_str()), (503, "body"));
        assert!(parse_response(b"garbage\r\n\r\n", true).is_err());
        assert!(parse_response(b"HTTP/1.1 2x0 OK\r\n\r\n", true).is_err());
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
