//! The server half: an accept loop on a tokio listener, one task per
//! connection, hyper's HTTP/1.1 (request parsing, keep-alive, chunked
//! bodies). [`Limits`] bound what one client can hold: connections at once
//! (in all, and from one address; more are closed as soon as accepted, and
//! counted), the time to send a request head, a connection's whole life,
//! and the head's size.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{header, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::BoxError;
use crate::metrics::Exposition;

/// A response body: whole ([`full`]) or streamed ([`channel`]).
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// What a server lets one client hold.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections served at once; one more is closed when accepted.
    pub max_connections: usize,
    /// Connections served at once from one IP address (`None`: no bound of
    /// its own); one more from it is closed when accepted. Slow clients
    /// from one address then cannot take every slot from the others.
    pub max_per_peer: Option<usize>,
    /// The request head must have arrived this long after the connection
    /// opened (or after the previous response, with keep-alive); `None`:
    /// no bound.
    pub header_timeout: Option<Duration>,
    /// A connection is closed this long after it opened, answered or not
    /// (`None`: no bound, for long-lived streams).
    pub connection_timeout: Option<Duration>,
    /// Request line plus headers, in bytes; more is answered 431.
    pub max_head: usize,
    /// Serve further requests on a connection (else close after one).
    pub keep_alive: bool,
}

/// What a server did with connections (for its owner's metrics).
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections served.
    pub accepted: AtomicU64,
    /// Connections closed at once: `max_connections` were open, or
    /// `max_per_peer` from its address.
    pub rejected: AtomicU64,
    /// Connections closed by a deadline (head or whole connection).
    pub timed_out: AtomicU64,
}

impl Stats {
    /// The families `<prefix>_connections_total`,
    /// `<prefix>_connections_rejected_total` and
    /// `<prefix>_connection_timeouts_total`.
    pub fn render(&self, w: &mut Exposition, prefix: &str, what: &str) {
        w.counter(
            &format!("{prefix}_connections_total"),
            &format!("Connections to the {what} served."),
            self.accepted.load(Relaxed),
        );
        w.counter(
            &format!("{prefix}_connections_rejected_total"),
            &format!("Connections to the {what} closed at once: too many were open (in all, or from its address)."),
            self.rejected.load(Relaxed),
        );
        w.counter(
            &format!("{prefix}_connection_timeouts_total"),
            &format!("Connections to the {what} closed by a deadline (request head or whole connection)."),
            self.timed_out.load(Relaxed),
        );
    }
}

/// Connections open per peer address, for [`Limits::max_per_peer`].
#[derive(Default)]
struct PeerCounts(parking_lot::Mutex<HashMap<IpAddr, usize>>);

/// A connection's place in [`PeerCounts`], given back on drop.
struct PeerSlot {
    counts: Arc<PeerCounts>,
    ip: IpAddr,
}

impl PeerCounts {
    /// A slot for one more connection from `ip`, if it holds fewer than
    /// `max`.
    fn take(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<PeerSlot> {
        let mut m = self.0.lock();
        let n = m.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(PeerSlot {
            counts: self.clone(),
            ip,
        })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut m = self.counts.0.lock();
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

/// A whole response.
pub fn full(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(
        Full::new(body.into())
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *r.status_mut() = status;
    if let Ok(v) = header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

/// The sending end of a streamed body ([`channel`]).
pub struct BodySender(http_body_util::channel::Sender<Bytes, BoxError>);

impl BodySender {
    /// Sends one chunk; false once the client is gone.
    pub async fn send(&mut self, data: Bytes) -> bool {
        self.0.send_data(data).await.is_ok()
    }

    /// Ends the body abruptly: the connection is closed without the
    /// terminating chunk, as when a server goes away mid-stream.
    pub fn abort(self) {
        self.0.abort(std::io::Error::other("stream aborted").into());
    }
}

/// A streamed (chunked) body and its sender; dropping the sender ends the
/// body cleanly.
pub fn channel() -> (BodySender, Body) {
    let (tx, body) = http_body_util::channel::Channel::<Bytes, BoxError>::new(16);
    (BodySender(tx), body.boxed_unsync())
}

/// Why a request body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("request body larger than {0} bytes")]
    TooLarge(usize),
    #[error("reading the request body: {0}")]
    Read(BoxError),
}

/// Reads a request's whole body, at most `limit` bytes.
pub async fn read_body(body: Incoming, limit: usize) -> Result<Bytes, BodyError> {
    match Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(BodyError::TooLarge(limit)),
        Err(e) => Err(BodyError::Read(e)),
    }
}

/// Serves `listener` until `shutdown` resolves: each connection on its own
/// task, each request answered by `handler`, within `limits` (counted in
/// `stats`).
pub async fn serve<H, F>(
    listener: TcpListener,
    limits: Limits,
    stats: Arc<Stats>,
    handler: H,
    shutdown: impl Future<Output = ()>,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let peers = Arc::new(PeerCounts::default());
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_header_size(limits.max_head)
        .keep_alive(limits.keep_alive)
        .title_case_headers(true);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors, or the peer gave up: not fatal.
                    tracing::debug!(error = %e, "accept");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        let peer_slot = match limits.max_per_peer {
            Some(max) => peers.take(peer.ip(), max).map(Some),
            None => Some(None),
        };
        let (Ok(slot), Some(peer_slot)) = (slots.clone().try_acquire_owned(), peer_slot) else {
            stats.rejected.fetch_add(1, Relaxed);
            drop(tcp);
            continue;
        };
        stats.accepted.fetch_add(1, Relaxed);
        let _ = tcp.set_nodelay(true);
        let handler = handler.clone();
        let service = hyper::service::service_fn(move |req| {
            let h = handler.clone();
            async move { Ok::<_, Infallible>(h(req).await) }
        });
        let conn = builder.serve_connection(TokioIo::new(tcp), service);
        let stats = stats.clone();
        let deadline = limits.connection_timeout;
        tokio::spawn(async move {
            let r = match deadline {
                Some(d) => tokio::time::timeout(d, conn).await.ok(),
                None => Some(conn.await),
            };
            match r {
                None => {
                    stats.timed_out.fetch_add(1, Relaxed);
                }
                Some(Err(e)) if e.is_timeout() => {
                    stats.timed_out.fetch_add(1, Relaxed);
                }
                Some(Err(e)) => tracing::debug!(error = %e, "http connection"),
                Some(Ok(())) => {}
            }
            drop((slot, peer_slot));
        });
    }
}
