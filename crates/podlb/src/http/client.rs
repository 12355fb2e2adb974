//! The client half: one HTTP/1.1 connection ([`Conn`]) over any byte stream
//! (TCP, or TLS for the cloud API), on hyper's client connection; and
//! [`BlockingConn`], the same with its own current-thread runtime for
//! callers that are plain threads (`podlb status`, the lab).
//!
//! A connection is made from the thread that calls [`connect`] (the runtime
//! is current-thread), so it belongs to that thread's network namespace:
//! the lab relies on it.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, StatusCode, Version};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::BoxError;

/// A request body (whole).
pub type ReqBody = Full<Bytes>;

/// Largest response body [`BlockingConn`] reads.
pub const MAX_BODY: usize = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("connect {addr}: {source}")]
    Connect { addr: SocketAddr, source: io::Error },
    #[error("timed out after {} ms", .0.as_millis())]
    Timeout(Duration),
    #[error("{0}")]
    Http(#[from] hyper::Error),
    #[error("bad request: {0}")]
    Request(#[from] hyper::http::Error),
    #[error("response body larger than {0} bytes")]
    TooLarge(usize),
    #[error("reading the response body: {0}")]
    Body(BoxError),
    #[error("runtime: {0}")]
    Runtime(io::Error),
}

impl Error {
    /// The connection was refused (nothing listening).
    pub fn is_refused(&self) -> bool {
        matches!(self, Error::Connect { source, .. } if source.kind() == io::ErrorKind::ConnectionRefused)
    }
}

/// A response read whole.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Response {
    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Whether the server closes the connection after this response
    /// (`Connection: close`, or HTTP/1.0 without keep-alive).
    pub fn closes(&self) -> bool {
        let conn = |token: &str| {
            self.headers
                .get_all(header::CONNECTION)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .any(|t| t.trim().eq_ignore_ascii_case(token))
        };
        conn("close") || (self.version == Version::HTTP_10 && !conn("keep-alive"))
    }
}

/// A request for `target` (origin form: path and query) with a `Host`
/// header; add headers, then the body.
pub fn request(method: Method, target: &str, host: &str) -> hyper::http::request::Builder {
    Request::builder()
        .method(method)
        .uri(target)
        .header(header::HOST, host)
}

/// An empty request body.
pub fn empty() -> ReqBody {
    Full::new(Bytes::new())
}

/// A request body of `data`.
pub fn body(data: impl Into<Bytes>) -> ReqBody {
    Full::new(data.into())
}

/// Connects a TCP stream within `timeout`.
pub async fn connect(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, Error> {
    let tcp = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| Error::Timeout(timeout))?
        .map_err(|source| Error::Connect { addr, source })?;
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

/// One client connection; requests go one at a time.
pub struct Conn {
    sender: SendRequest<ReqBody>,
}

impl Conn {
    /// Starts HTTP/1.1 on `io` (nothing is sent yet); the connection is
    /// driven by a task on the current runtime and closed when the `Conn`
    /// is dropped.
    pub async fn handshake<T>(io: T) -> Result<Conn, Error>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) = hyper::client::conn::http1::Builder::new()
            .title_case_headers(true)
            .handshake(TokioIo::new(io))
            .await?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::trace!(error = %e, "http client connection");
            }
        });
        Ok(Conn { sender })
    }

    /// Sends `req`; returns once the response head has arrived (the body
    /// streams after).
    pub async fn send(
        &mut self,
        req: Request<ReqBody>,
    ) -> Result<hyper::Response<Incoming>, Error> {
        self.sender.ready().await?;
        Ok(self.sender.send_request(req).await?)
    }

    /// Sends `req` and reads the whole response, its body at most
    /// `max_body` bytes.
    pub async fn fetch(
        &mut self,
        req: Request<ReqBody>,
        max_body: usize,
    ) -> Result<Response, Error> {
        let (parts, body) = self.send(req).await?.into_parts();
        let body = match Limited::new(body, max_body).collect().await {
            Ok(c) => c.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return Err(Error::TooLarge(max_body))
            }
            Err(e) => return Err(Error::Body(e)),
        };
        Ok(Response {
            status: parts.status,
            version: parts.version,
            headers: parts.headers,
            body,
        })
    }

    /// The server closed the connection (or it failed).
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }
}

/// A blocking client connection: [`Conn`] with its own runtime. Made in the
/// calling thread's network namespace; usable from any thread after.
pub struct BlockingConn {
    rt: tokio::runtime::Runtime,
    conn: Conn,
    /// The body of the response [`BlockingConn::open`] returned, while it
    /// streams.
    body: Option<Incoming>,
    addr: SocketAddr,
    local: SocketAddr,
    timeout: Duration,
}

impl BlockingConn {
    /// Connects to `addr`; `timeout` bounds the connect and each request.
    pub fn connect(addr: SocketAddr, timeout: Duration) -> Result<BlockingConn, Error> {
        let rt = super::runtime().map_err(Error::Runtime)?;
        let (conn, local) = rt.block_on(async {
            let tcp = connect(addr, timeout).await?;
            let local = tcp
                .local_addr()
                .map_err(|source| Error::Connect { addr, source })?;
            Ok::<_, Error>((Conn::handshake(tcp).await?, local))
        })?;
        Ok(BlockingConn {
            rt,
            conn,
            body: None,
            addr,
            local,
            timeout,
        })
    }

    /// The connection's local address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The server's address (the default `Host`).
    pub fn peer_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sends `req` and reads the response (body at most [`MAX_BODY`]),
    /// within the connection's timeout.
    pub fn fetch(&mut self, req: Request<ReqBody>) -> Result<Response, Error> {
        self.body = None;
        let t = self.timeout;
        let conn = &mut self.conn;
        self.rt
            .block_on(async { tokio::time::timeout(t, conn.fetch(req, MAX_BODY)).await })
            .map_err(|_| Error::Timeout(t))?
    }

    /// `GET target` with `Host` the server's address and the `headers`
    /// given.
    pub fn get(&mut self, target: &str, headers: &[(&str, &str)]) -> Result<Response, Error> {
        let mut b = request(Method::GET, target, &self.addr.to_string());
        for (k, v) in headers {
            b = b.header(
                *k,
                HeaderValue::from_str(v).map_err(hyper::http::Error::from)?,
            );
        }
        let req = b.body(empty())?;
        self.fetch(req)
    }

    /// Sends `req` and returns the response head (within the timeout);
    /// its body is then read piece by piece with [`BlockingConn::chunk`].
    pub fn open(&mut self, req: Request<ReqBody>) -> Result<(StatusCode, HeaderMap), Error> {
        self.body = None;
        let t = self.timeout;
        let conn = &mut self.conn;
        let resp = self
            .rt
            .block_on(async { tokio::time::timeout(t, conn.send(req)).await })
            .map_err(|_| Error::Timeout(t))??;
        let (parts, body) = resp.into_parts();
        self.body = Some(body);
        Ok((parts.status, parts.headers))
    }

    /// The next piece of the body [`BlockingConn::open`] streams, within
    /// the timeout; `None` once it has ended cleanly.
    pub fn chunk(&mut self) -> Result<Option<Bytes>, Error> {
        let t = self.timeout;
        let Some(body) = self.body.as_mut() else {
            return Ok(None);
        };
        loop {
            let frame = self
                .rt
                .block_on(async { tokio::time::timeout(t, body.frame()).await })
                .map_err(|_| Error::Timeout(t))?;
            match frame {
                None => {
                    self.body = None;
                    return Ok(None);
                }
                Some(Err(e)) => {
                    self.body = None;
                    return Err(Error::Http(e));
                }
                Some(Ok(f)) => {
                    if let Ok(data) = f.into_data() {
                        return Ok(Some(data));
                    }
                }
            }
        }
    }

    /// The server closed the connection.
    pub fn is_closed(&self) -> bool {
        self.conn.is_closed()
    }
}

/// One `GET target` on a fresh connection (`Connection: close`), within
/// `timeout`: what `podlb status` does.
pub fn get_once(addr: SocketAddr, target: &str, timeout: Duration) -> Result<Response, Error> {
    BlockingConn::connect(addr, timeout)?.get(target, &[("connection", "close")])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// A one-shot raw server: reads one request head, answers `reply`,
    /// returns the request it read.
    fn raw_server(reply: &'static [u8]) -> (SocketAddr, std::thread::JoinHandle<String>) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            s.write_all(reply).unwrap();
            String::from_utf8(got).unwrap()
        });
        (addr, t)
    }

    #[test]
    fn get_once_sends_a_plain_request_and_reads_the_body() {
        let (addr, t) =
            raw_server(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc");
        let r = get_once(addr, "/status?x=1", Duration::from_secs(5)).unwrap();
        assert_eq!((r.status, r.text().as_str()), (StatusCode::OK, "abc"));
        assert!(r.closes());
        assert_eq!(
            t.join().unwrap(),
            format!("GET /status?x=1 HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
        );
    }

    #[test]
    fn chunked_and_eof_delimited_bodies() {
        let (addr, _t) = raw_server(
            b"HTTP/1.1 400 Bad\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        );
        let r = get_once(addr, "/", Duration::from_secs(5)).unwrap();
        assert_eq!((r.status.as_u16(), r.text().as_str()), (400, "abcde"));
        let (addr, _t) = raw_server(b"HTTP/1.0 503 x\r\n\r\nbody");
        let r = get_once(addr, "/", Duration::from_secs(5)).unwrap();
        assert_eq!((r.status.as_u16(), r.text().as_str()), (503, "body"));
        assert!(r.closes(), "HTTP/1.0 without keep-alive");
    }

    #[test]
    fn errors_refused_garbage_and_silence() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let e = get_once(([127, 0, 0, 1], port).into(), "/", Duration::from_secs(5)).unwrap_err();
        assert!(e.is_refused(), "{e}");
        let (addr, _t) = raw_server(b"SSH-2.0-OpenSSH_9.6\r\n\r\n");
        let e = get_once(addr, "/", Duration::from_secs(5)).unwrap_err();
        assert!(matches!(&e, Error::Http(h) if h.is_parse()), "{e:?}");
        // Accepts, never answers.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let e = get_once(l.local_addr().unwrap(), "/", Duration::from_millis(100)).unwrap_err();
        assert!(matches!(e, Error::Timeout(_)), "{e:?}");
    }

    #[test]
    fn keep_alive_connection_serves_several_requests() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut buf = [0u8; 4096];
            for body in ["one", "two"] {
                let _ = s.read(&mut buf).unwrap();
                write!(s, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n{body}").unwrap();
            }
        });
        let mut c = BlockingConn::connect(addr, Duration::from_secs(5)).unwrap();
        assert_eq!(c.get("/", &[]).unwrap().text(), "one");
        assert_eq!(c.get("/", &[("user-agent", "x")]).unwrap().text(), "two");
        assert!(c.local_addr().port() != 0);
        t.join().unwrap();
    }
}
