//! podlb's one HTTP/1.1 stack, on hyper (already in the tree through
//! kube-rs): [`server`] for the admin endpoint and the lab's servers,
//! [`client`] for the health probe, the cloud client, `podlb status` and the
//! lab's clients. Nothing else in podlb reads or writes HTTP by hand (the
//! open-loop load generator of the benches excepted: docs/decisions.md).

pub mod client;
pub mod server;

pub use bytes::Bytes;
pub use hyper::body::Incoming;
pub use hyper::{header, Method, Request, Response, StatusCode, Version};

/// The error of a streaming body.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The value of query parameter `name` in `query` (the part after `?`),
/// percent-decoded (`+` is a space); the first one if repeated.
pub fn query_param(query: &str, name: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// A current-thread tokio runtime with IO and timers: what a blocking
/// caller ([`client::BlockingConn`], the cloud thread) runs HTTP on.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params() {
        let q = "limit=5&labelSelector=app%3Dweb%2Ctier+in&watch&limit=7";
        assert_eq!(query_param(q, "limit").as_deref(), Some("5"));
        assert_eq!(
            query_param(q, "labelSelector").as_deref(),
            Some("app=web,tier in")
        );
        assert_eq!(query_param(q, "watch").as_deref(), Some(""));
        assert_eq!(query_param(q, "nope"), None);
        assert_eq!(query_param("", "limit"), None);
    }
}
