//! An in-process fake Kubernetes API server for tests, spoken to over plain
//! HTTP/1.1 exactly as a client (kube-rs) talks to a real kube-apiserver.
//!
//! It keeps a generic store of JSON objects keyed by (resource, namespace,
//! name) with one global, monotonically increasing resourceVersion, and
//! follows the real list/watch semantics: lists carry the store's current
//! resourceVersion, watches replay every event after the requested
//! resourceVersion from a bounded history and then stream live events
//! (chunked, one JSON event per line), a resourceVersion older than the
//! retained history gets a single `ERROR` event with a 410 `Expired` Status,
//! watches from "0" (or none) start with synthetic `ADDED` events, and
//! `BOOKMARK` events arrive about every second when asked for. The status
//! subresource is separate from the main resource. Errors are `Status`
//! objects.
//!
//! Not modelled: authentication (the bearer token is only logged),
//! namespace existence, finalizers, server-side apply field management
//! (apply is a merge patch that creates when missing), set-based label
//! selectors, `limit`/`continue` paging (lists are always complete) and
//! YAML bodies.
//!
//! It serves with podlb's HTTP stack ([`podlb::http::server`], hyper) on one
//! thread running a tokio runtime, a task per connection and per watch;
//! dropping the [`FakeApi`] stops it and closes every connection (bounded).

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use podlb::http::header::{self, HeaderMap, HeaderValue};
use podlb::http::server::{self, Body, BodySender, Limits};
use podlb::http::{self, Bytes, Incoming, StatusCode};
use serde_json::{json, Map, Value};
use tokio::sync::Notify;

/// Events retained for watches that resume from a resourceVersion.
const HISTORY_LIMIT: usize = 1024;
/// Request line plus headers.
const MAX_HEADER_BYTES: usize = 16 * 1024;
const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
const BOOKMARK_INTERVAL: Duration = Duration::from_secs(1);
/// How long Drop waits for the server's threads.
const JOIN_DEADLINE: Duration = Duration::from_secs(2);
/// The token written into kubeconfigs.
pub const TOKEN: &str = "fakeapi-token";

/// A resource type the fake server knows.
struct Res {
    group: &'static str,
    version: &'static str,
    resource: &'static str,
    singular: &'static str,
    kind: &'static str,
    namespaced: bool,
    /// Has a `status` subresource.
    status: bool,
}

impl Res {
    fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// How the real server names the resource in messages.
    fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.resource.to_string()
        } else {
            format!("{}.{}", self.resource, self.group)
        }
    }
}

const RESOURCES: &[Res] = &[
    Res {
        group: "",
        version: "v1",
        resource: "namespaces",
        singular: "namespace",
        kind: "Namespace",
        namespaced: false,
        status: true,
    },
    Res {
        group: "",
        version: "v1",
        resource: "services",
        singular: "service",
        kind: "Service",
        namespaced: true,
        status: true,
    },
    Res {
        group: "",
        version: "v1",
        resource: "pods",
        singular: "pod",
        kind: "Pod",
        namespaced: true,
        status: true,
    },
    Res {
        group: "",
        version: "v1",
        resource: "nodes",
        singular: "node",
        kind: "Node",
        namespaced: false,
        status: true,
    },
    Res {
        group: "",
        version: "v1",
        resource: "events",
        singular: "event",
        kind: "Event",
        namespaced: true,
        status: false,
    },
    Res {
        group: "discovery.k8s.io",
        version: "v1",
        resource: "endpointslices",
        singular: "endpointslice",
        kind: "EndpointSlice",
        namespaced: true,
        status: false,
    },
    Res {
        group: "coordination.k8s.io",
        version: "v1",
        resource: "leases",
        singular: "lease",
        kind: "Lease",
        namespaced: true,
        status: false,
    },
];

fn find_res(api_version: &str, resource: &str) -> Option<usize> {
    RESOURCES
        .iter()
        .position(|r| r.resource == resource && r.api_version() == api_version)
}

/// An API error; over HTTP it is a `Status` object with `code`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    fn not_found(res: &Res, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{}\" not found", res.qualified(), name),
        )
    }

    fn no_route() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    fn status(&self) -> Value {
        json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        })
    }
}

/// One logged HTTP request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    pub method: String,
    pub path: String,
    /// The raw query string (without `?`), possibly empty.
    pub query: String,
    pub authorization: Option<String>,
}

type Key = (usize, String, String);

struct Event {
    rv: u64,
    typ: &'static str,
    res: usize,
    /// The object after the change (for DELETED: the deleted object).
    obj: Value,
    /// The object before a MODIFIED change.
    prev: Option<Value>,
}

#[derive(Default)]
struct State {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    history: VecDeque<Event>,
    /// Watches must start at or after this resourceVersion (older: 410).
    floor: u64,
    /// Bumped by `drop_watches`; a watch ends when it changes.
    watch_gen: u64,
    uid_seq: u64,
}

fn meta(obj: &Value, field: &str) -> Option<String> {
    obj.get("metadata")?
        .get(field)?
        .as_str()
        .map(str::to_string)
}

fn meta_mut(obj: &mut Value) -> Result<&mut Map<String, Value>, ApiError> {
    let o = obj
        .as_object_mut()
        .ok_or_else(|| ApiError::bad_request("the body must be a JSON object"))?;
    o.entry("metadata").or_insert_with(|| json!({}));
    o.get_mut("metadata")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| ApiError::bad_request("metadata must be an object"))
}

fn set_rv(obj: &mut Value, rv: u64) {
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        m.insert("resourceVersion".into(), Value::String(rv.to_string()));
    }
}

/// Everything but metadata and status: what bumps metadata.generation.
fn spec_part(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
    }
    o
}

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            if let Some(t) = target.as_object_mut() {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        _ => *target = patch.clone(),
    }
}

/// RFC 3339 UTC, the API's `Time` form (podlb's own formatter).
use podlb::k8s::client::rfc3339;

fn now_rfc3339() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    rfc3339(secs)
}

impl State {
    fn commit(
        &mut self,
        typ: &'static str,
        key: Key,
        prev: Option<Value>,
        mut obj: Value,
    ) -> Value {
        self.rv += 1;
        set_rv(&mut obj, self.rv);
        if typ == "DELETED" {
            self.objects.remove(&key);
        } else {
            self.objects.insert(key.clone(), obj.clone());
        }
        self.history.push_back(Event {
            rv: self.rv,
            typ,
            res: key.0,
            obj: obj.clone(),
            prev,
        });
        while self.history.len() > HISTORY_LIMIT {
            if let Some(e) = self.history.pop_front() {
                self.floor = e.rv;
            }
        }
        obj
    }

    /// Creates `body` in namespace `ns` ("" for cluster-scoped resources).
    fn create(
        &mut self,
        res_idx: usize,
        ns: &str,
        mut body: Value,
        keep_status: bool,
    ) -> Result<Value, ApiError> {
        let res = &RESOURCES[res_idx];
        let seq = self.uid_seq + 1;
        {
            let md = meta_mut(&mut body)?;
            let name = match md.get("name").and_then(Value::as_str) {
                Some(n) if !n.is_empty() => n.to_string(),
                _ => match md.get("generateName").and_then(Value::as_str) {
                    Some(g) if !g.is_empty() => format!("{g}{:05x}", seq & 0xf_ffff),
                    _ => {
                        return Err(ApiError::new(
                            422,
                            "Invalid",
                            "metadata.name: Required value: name or generateName is required",
                        ))
                    }
                },
            };
            if res.namespaced {
                match md.get("namespace").and_then(Value::as_str) {
                    Some(n) if !n.is_empty() && n != ns => {
                        return Err(ApiError::bad_request(
                            "the namespace of the provided object does not match the namespace sent on the request",
                        ))
                    }
                    _ => {}
                }
                md.insert("namespace".into(), Value::String(ns.to_string()));
            } else {
                md.remove("namespace");
            }
            if self
                .objects
                .contains_key(&(res_idx, ns.to_string(), name.clone()))
            {
                return Err(ApiError::new(
                    409,
                    "AlreadyExists",
                    format!("{} \"{}\" already exists", res.qualified(), name),
                ));
            }
            md.insert("name".into(), Value::String(name));
            md.insert(
                "uid".into(),
                Value::String(format!("fa4e0000-0000-4000-8000-{seq:012x}")),
            );
            md.insert("creationTimestamp".into(), Value::String(now_rfc3339()));
            md.insert("generation".into(), json!(1));
            md.remove("resourceVersion");
        }
        self.uid_seq = seq;
        if let Some(o) = body.as_object_mut() {
            o.insert("kind".into(), Value::String(res.kind.into()));
            o.insert("apiVersion".into(), Value::String(res.api_version()));
            if res.status && !keep_status {
                o.remove("status");
            }
        }
        let name = meta(&body, "name").unwrap_or_default();
        Ok(self.commit("ADDED", (res_idx, ns.to_string(), name), None, body))
    }

    /// PUT semantics; `status_only` is the status subresource.
    fn replace(
        &mut self,
        res_idx: usize,
        ns: &str,
        name: &str,
        mut body: Value,
        status_only: bool,
    ) -> Result<Value, ApiError> {
        let res = &RESOURCES[res_idx];
        let key = (res_idx, ns.to_string(), name.to_string());
        let old = self
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(res, name))?;
        let old_rv = meta(&old, "resourceVersion").unwrap_or_default();
        {
            let md = meta_mut(&mut body)?;
            if let Some(n) = md.get("name").and_then(Value::as_str) {
                if n != name {
                    return Err(ApiError::bad_request(format!(
                        "the name of the object ({n}) does not match the name on the URL ({name})"
                    )));
                }
            }
            if let Some(rv) = md.get("resourceVersion").and_then(Value::as_str) {
                if !rv.is_empty() && rv != old_rv {
                    return Err(ApiError::new(
                        409,
                        "Conflict",
                        format!(
                            "Operation cannot be fulfilled on {} \"{}\": the object has been modified; please apply your changes to the latest version and try again",
                            res.qualified(),
                            name
                        ),
                    ));
                }
            }
        }
        let new = if status_only {
            let mut n = old.clone();
            if let Some(o) = n.as_object_mut() {
                match body.get("status") {
                    Some(s) => o.insert("status".into(), s.clone()),
                    None => o.remove("status"),
                };
            }
            n
        } else {
            let mut n = body;
            let o = n
                .as_object_mut()
                .ok_or_else(|| ApiError::bad_request("the body must be a JSON object"))?;
            o.insert("kind".into(), Value::String(res.kind.into()));
            o.insert("apiVersion".into(), Value::String(res.api_version()));
            if res.status {
                match old.get("status") {
                    Some(s) => o.insert("status".into(), s.clone()),
                    None => o.remove("status"),
                };
            }
            let gen = old
                .get("metadata")
                .and_then(|m| m.get("generation"))
                .and_then(Value::as_i64)
                .unwrap_or(1);
            let gen = if spec_part(&n) == spec_part(&old) {
                gen
            } else {
                gen + 1
            };
            let md = meta_mut(&mut n)?;
            md.insert("name".into(), Value::String(name.into()));
            if res.namespaced {
                md.insert("namespace".into(), Value::String(ns.into()));
            } else {
                md.remove("namespace");
            }
            for f in ["uid", "creationTimestamp"] {
                if let Some(v) = old.get("metadata").and_then(|m| m.get(f)) {
                    md.insert(f.into(), v.clone());
                }
            }
            md.insert("generation".into(), json!(gen));
            md.insert("resourceVersion".into(), Value::String(old_rv.clone()));
            n
        };
        if new == old {
            // A no-op write changes nothing: same resourceVersion, no event.
            return Ok(old);
        }
        Ok(self.commit("MODIFIED", key, Some(old), new))
    }

    fn delete(&mut self, res_idx: usize, ns: &str, name: &str) -> Result<Value, ApiError> {
        let key = (res_idx, ns.to_string(), name.to_string());
        let old = self
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&RESOURCES[res_idx], name))?;
        Ok(self.commit("DELETED", key, None, old))
    }
}

/// A label or field selector requirement.
#[derive(Debug, Clone)]
enum Req {
    Eq(String, String),
    Ne(String, String),
    Exists(String),
    NotExists(String),
}

fn parse_selector(s: &str, fields: bool) -> Result<Vec<Req>, ApiError> {
    let mut out = Vec::new();
    for term in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let req = if let Some((k, v)) = term.split_once("!=") {
            Req::Ne(k.trim().into(), v.trim().into())
        } else if let Some((k, v)) = term.split_once("==") {
            Req::Eq(k.trim().into(), v.trim().into())
        } else if let Some((k, v)) = term.split_once('=') {
            Req::Eq(k.trim().into(), v.trim().into())
        } else if fields {
            return Err(ApiError::bad_request(format!(
                "invalid field selector: {term}"
            )));
        } else if let Some(k) = term.strip_prefix('!') {
            Req::NotExists(k.trim().into())
        } else if term.contains([' ', '(', ')']) {
            return Err(ApiError::bad_request(format!(
                "set-based label selectors are not supported by the fake API server: {term}"
            )));
        } else {
            Req::Exists(term.into())
        };
        let key = match &req {
            Req::Eq(k, _) | Req::Ne(k, _) | Req::Exists(k) | Req::NotExists(k) => k,
        };
        if key.is_empty() {
            return Err(ApiError::bad_request(format!("invalid selector: {s}")));
        }
        if fields && key != "metadata.name" && key != "metadata.namespace" {
            return Err(ApiError::bad_request(format!(
                "field label not supported: {key}"
            )));
        }
        out.push(req);
    }
    Ok(out)
}

/// What a list or watch selects.
struct Filter {
    res: usize,
    ns: Option<String>,
    labels: Vec<Req>,
    fields: Vec<Req>,
}

impl Filter {
    fn matches(&self, obj: &Value) -> bool {
        if let Some(ns) = &self.ns {
            if meta(obj, "namespace").as_deref().unwrap_or("") != ns {
                return false;
            }
        }
        let labels = obj.get("metadata").and_then(|m| m.get("labels"));
        let label = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        let field = |k: &str| meta(obj, k.trim_start_matches("metadata.")).unwrap_or_default();
        self.labels.iter().all(|r| match r {
            Req::Eq(k, v) => label(k) == Some(v.as_str()),
            Req::Ne(k, v) => label(k) != Some(v.as_str()),
            Req::Exists(k) => label(k).is_some(),
            Req::NotExists(k) => label(k).is_none(),
        }) && self.fields.iter().all(|r| match r {
            Req::Eq(k, v) => field(k) == *v,
            Req::Ne(k, v) => field(k) != *v,
            Req::Exists(_) | Req::NotExists(_) => true,
        })
    }

    /// The event a watcher with this filter sees for `e`, if any: an object
    /// moving into the selection is ADDED, moving out of it is DELETED.
    fn event(&self, e: &Event) -> Option<(&'static str, Value)> {
        if e.res != self.res {
            return None;
        }
        match e.typ {
            "ADDED" => self.matches(&e.obj).then(|| ("ADDED", e.obj.clone())),
            "DELETED" => self.matches(&e.obj).then(|| ("DELETED", e.obj.clone())),
            _ => {
                let was = e.prev.as_ref().is_some_and(|p| self.matches(p));
                match (was, self.matches(&e.obj)) {
                    (true, true) => Some(("MODIFIED", e.obj.clone())),
                    (false, true) => Some(("ADDED", e.obj.clone())),
                    (true, false) => {
                        let mut gone = e.prev.clone().unwrap_or(Value::Null);
                        set_rv(&mut gone, e.rv);
                        Some(("DELETED", gone))
                    }
                    (false, false) => None,
                }
            }
        }
    }
}

struct Shared {
    state: Mutex<State>,
    /// Woken (every waiter) when the state changes, the watches are
    /// dropped or the server stops.
    changed: Notify,
    stop: AtomicBool,
    unavailable: AtomicBool,
    requests: Mutex<Vec<RequestRecord>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What one client can hold: nothing bounds its time (watches are long
/// lived), its request head is at most [`MAX_HEADER_BYTES`].
const LIMITS: Limits = Limits {
    max_connections: 4096,
    max_per_peer: None,
    header_timeout: None,
    connection_timeout: None,
    max_head: MAX_HEADER_BYTES,
    keep_alive: true,
};

/// A running fake API server. Dropping it stops the server.
pub struct FakeApi {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Arc<Notify>,
    thread: Option<JoinHandle<()>>,
}

impl FakeApi {
    /// Binds `addr` (e.g. `127.0.0.1:0`) and starts serving. The socket is
    /// created in the calling thread's network namespace, so to serve inside
    /// a namespace call this from a thread that has entered it.
    pub fn start(addr: impl ToSocketAddrs) -> io::Result<FakeApi> {
        Self::from_listener(TcpListener::bind(addr)?)
    }

    /// Serves on a listener the caller bound (anywhere).
    pub fn from_listener(listener: TcpListener) -> io::Result<FakeApi> {
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Notify::new(),
            stop: AtomicBool::new(false),
            unavailable: AtomicBool::new(false),
            requests: Mutex::new(Vec::new()),
        });
        let shutdown = Arc::new(Notify::new());
        let rt = http::runtime()?;
        let (sh, down) = (shared.clone(), shutdown.clone());
        let thread = thread::Builder::new()
            .name("fakeapi".into())
            .spawn(move || {
                rt.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                        return;
                    };
                    let handler = move |req| serve_request(sh.clone(), req);
                    let stats = Arc::new(server::Stats::default());
                    server::serve(listener, LIMITS, stats, handler, down.notified()).await;
                });
                // Closes every connection still open.
                rt.shutdown_timeout(Duration::from_millis(100));
            })?;
        Ok(FakeApi {
            addr,
            shared,
            shutdown,
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://IP:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The store's current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        lock(&self.shared.state).rv
    }

    fn write<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut st = lock(&self.shared.state);
        let out = f(&mut st);
        drop(st);
        self.shared.changed.notify_waiters();
        out
    }

    fn res(api_version: &str, resource: &str) -> Result<usize, ApiError> {
        find_res(api_version, resource).ok_or_else(ApiError::no_route)
    }

    fn ns_of(res: usize, obj: &Value) -> String {
        if RESOURCES[res].namespaced {
            meta(obj, "namespace")
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| "default".into())
        } else {
            String::new()
        }
    }

    /// Creates `obj` (namespace from its metadata, default "default") as the
    /// API would, except that a given `.status` is kept (to seed state).
    pub fn create(&self, api_version: &str, resource: &str, obj: Value) -> Result<Value, ApiError> {
        let res = Self::res(api_version, resource)?;
        let ns = Self::ns_of(res, &obj);
        self.write(|st| st.create(res, &ns, obj, true))
    }

    /// Replaces the object named by `obj`'s metadata like a PUT: `.status` is
    /// ignored, a set and stale metadata.resourceVersion is a 409 Conflict.
    pub fn update(&self, api_version: &str, resource: &str, obj: Value) -> Result<Value, ApiError> {
        let res = Self::res(api_version, resource)?;
        let ns = Self::ns_of(res, &obj);
        let name = meta(&obj, "name").unwrap_or_default();
        self.write(|st| st.replace(res, &ns, &name, obj, false))
    }

    /// Replaces only `.status`, like a PUT to the status subresource.
    pub fn update_status(
        &self,
        api_version: &str,
        resource: &str,
        obj: Value,
    ) -> Result<Value, ApiError> {
        let res = Self::res(api_version, resource)?;
        if !RESOURCES[res].status {
            return Err(ApiError::no_route());
        }
        let ns = Self::ns_of(res, &obj);
        let name = meta(&obj, "name").unwrap_or_default();
        self.write(|st| st.replace(res, &ns, &name, obj, true))
    }

    /// Deletes; `namespace` is "" for cluster-scoped resources.
    pub fn delete(
        &self,
        api_version: &str,
        resource: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Value, ApiError> {
        let res = Self::res(api_version, resource)?;
        self.write(|st| st.delete(res, namespace, name))
    }

    pub fn get(
        &self,
        api_version: &str,
        resource: &str,
        namespace: &str,
        name: &str,
    ) -> Option<Value> {
        let res = find_res(api_version, resource)?;
        lock(&self.shared.state)
            .objects
            .get(&(res, namespace.to_string(), name.to_string()))
            .cloned()
    }

    /// All objects of a resource, in one namespace or (None) in all.
    pub fn list(&self, api_version: &str, resource: &str, namespace: Option<&str>) -> Vec<Value> {
        let Some(res) = find_res(api_version, resource) else {
            return Vec::new();
        };
        lock(&self.shared.state)
            .objects
            .iter()
            .filter(|(k, _)| k.0 == res && namespace.is_none_or(|n| k.1 == n))
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Forgets the event history: watches from any resourceVersion older
    /// than the current one now get a 410 Expired ERROR event.
    pub fn compact(&self) {
        self.write(|st| {
            st.history.clear();
            st.floor = st.rv;
        });
    }

    /// Ends every open watch stream abruptly (connection shut down without
    /// the terminating chunk), as when the API server goes away.
    pub fn drop_watches(&self) {
        self.write(|st| st.watch_gen += 1);
    }

    /// While set, every request is answered 503 ServiceUnavailable; setting
    /// it also drops the open watches.
    pub fn set_unavailable(&self, unavailable: bool) {
        self.shared.unavailable.store(unavailable, Ordering::SeqCst);
        if unavailable {
            self.drop_watches();
        }
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        lock(&self.shared.requests).clone()
    }

    /// Writes a kubeconfig for this server (plain http, bearer token
    /// [`TOKEN`]) whose current context uses `namespace`.
    pub fn write_kubeconfig(&self, path: &Path, namespace: &str) -> io::Result<()> {
        let server = if self.addr.ip().is_unspecified() {
            format!("http://127.0.0.1:{}", self.addr.port())
        } else {
            self.url()
        };
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fakeapi\n  cluster:\n    server: {server}\n\
             users:\n- name: fakeapi\n  user:\n    token: {TOKEN}\n\
             contexts:\n- name: fakeapi\n  context:\n    cluster: fakeapi\n    user: fakeapi\n    namespace: {namespace}\n\
             current-context: fakeapi\npreferences: {{}}\n"
        );
        std::fs::write(path, text)
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        let deadline = Instant::now() + JOIN_DEADLINE;
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.changed.notify_waiters();
        self.shutdown.notify_one();
        if let Some(h) = self.thread.take() {
            while !h.is_finished() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(5));
            }
            if h.is_finished() {
                let _ = h.join();
            }
        }
    }
}

/// A request as the handlers see it.
struct Request {
    method: String,
    path: String,
    query: String,
    headers: HeaderMap,
    body: Bytes,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn param(&self, name: &str) -> Option<String> {
        http::query_param(&self.query, name)
    }
}

fn json_response(code: u16, body: &Value) -> http::Response<Body> {
    let code = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    server::full(code, "application/json", body.to_string())
}

/// Answers one request: a JSON reply, or a watch stream.
async fn serve_request(shared: Arc<Shared>, req: http::Request<Incoming>) -> http::Response<Body> {
    let (parts, body) = req.into_parts();
    let body = match server::read_body(body, MAX_BODY_BYTES).await {
        Ok(b) => b,
        Err(e) => {
            let (code, reason) = match e {
                server::BodyError::TooLarge(_) => (413, "RequestEntityTooLarge"),
                server::BodyError::Read(_) => (400, "BadRequest"),
            };
            return json_response(code, &ApiError::new(code, reason, e.to_string()).status());
        }
    };
    let req = Request {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().unwrap_or("").to_string(),
        headers: parts.headers,
        body,
    };
    lock(&shared.requests).push(RequestRecord {
        method: req.method.clone(),
        path: req.path.clone(),
        query: req.query.clone(),
        authorization: req.header("authorization").map(str::to_string),
    });
    match handle(&shared, &req) {
        Reply::Json(code, body) => json_response(code, &body),
        Reply::Watch(p) => {
            let (tx, body) = server::channel();
            tokio::spawn(serve_watch(shared, tx, p));
            let mut r = http::Response::new(body);
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            h.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("no-cache, private"),
            );
            r
        }
    }
}

enum Reply {
    Json(u16, Value),
    Watch(WatchParams),
}

struct WatchParams {
    filter: Filter,
    /// None or Some(0): start with the current state.
    start: Option<u64>,
    bookmarks: bool,
    timeout: Option<Duration>,
}

fn err(e: ApiError) -> Reply {
    Reply::Json(e.code, e.status())
}

fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for r in RESOURCES.iter().filter(|r| !r.group.is_empty()) {
        if !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out
}

fn api_group(group: &str, version: &str) -> Value {
    let gv = json!({"groupVersion": format!("{group}/{version}"), "version": version});
    json!({"name": group, "versions": [gv.clone()], "preferredVersion": gv})
}

fn resource_list(api_version: &str) -> Value {
    let mut resources = Vec::new();
    for r in RESOURCES.iter().filter(|r| r.api_version() == api_version) {
        resources.push(json!({
            "name": r.resource, "singularName": r.singular, "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
        }));
        if r.status {
            resources.push(json!({
                "name": format!("{}/status", r.resource), "singularName": "",
                "namespaced": r.namespaced, "kind": r.kind, "verbs": ["get", "patch", "update"],
            }));
        }
    }
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": api_version,
           "resources": resources})
}

fn handle(shared: &Shared, req: &Request) -> Reply {
    if shared.unavailable.load(Ordering::SeqCst) {
        return err(ApiError::new(
            503,
            "ServiceUnavailable",
            "the fake API server is unavailable",
        ));
    }
    let segs: Vec<&str> = req.path.split('/').filter(|s| !s.is_empty()).collect();
    let get = req.method == "GET";
    match segs.as_slice() {
        ["version"] if get => Reply::Json(
            200,
            json!({"major": "1", "minor": "30", "gitVersion": "v1.30.0-fakeapi",
                   "gitCommit": "", "gitTreeState": "clean", "buildDate": "",
                   "goVersion": "", "compiler": "fake", "platform": "linux/amd64"}),
        ),
        ["api"] if get => Reply::Json(
            200,
            json!({"kind": "APIVersions", "versions": ["v1"],
                   "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0",
                                                   "serverAddress": ""}]}),
        ),
        ["apis"] if get => {
            let groups: Vec<Value> = group_versions()
                .into_iter()
                .map(|(g, v)| api_group(g, v))
                .collect();
            Reply::Json(
                200,
                json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
            )
        }
        ["api", "v1"] if get => Reply::Json(200, resource_list("v1")),
        ["apis", g] if get => match group_versions().into_iter().find(|(gg, _)| gg == g) {
            Some((g, v)) => {
                let mut body = api_group(g, v);
                body["kind"] = json!("APIGroup");
                body["apiVersion"] = json!("v1");
                Reply::Json(200, body)
            }
            None => err(ApiError::no_route()),
        },
        ["apis", g, v] if get => {
            if group_versions().iter().any(|(gg, vv)| gg == g && vv == v) {
                Reply::Json(200, resource_list(&format!("{g}/{v}")))
            } else {
                err(ApiError::no_route())
            }
        }
        ["api", "v1", rest @ ..] if !rest.is_empty() => {
            resource_request(shared, req, "v1", rest).unwrap_or_else(err)
        }
        ["apis", g, v, rest @ ..] if !rest.is_empty() => {
            resource_request(shared, req, &format!("{g}/{v}"), rest).unwrap_or_else(err)
        }
        _ => err(ApiError::no_route()),
    }
}

fn parse_body(req: &Request) -> Result<Value, ApiError> {
    let v: Value = serde_json::from_slice(&req.body)
        .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))?;
    if !v.is_object() {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    }
    Ok(v)
}

fn resource_request(
    shared: &Shared,
    req: &Request,
    api_version: &str,
    rest: &[&str],
) -> Result<Reply, ApiError> {
    let (path_ns, rest) = match rest {
        ["namespaces", ns, tail @ ..] if !tail.is_empty() => (Some(*ns), tail),
        _ => (None, rest),
    };
    let (resource, name, sub) = match rest {
        [r] => (*r, None, None),
        [r, n] => (*r, Some(*n), None),
        [r, n, s] => (*r, Some(*n), Some(*s)),
        _ => return Err(ApiError::no_route()),
    };
    let res_idx = find_res(api_version, resource).ok_or_else(ApiError::no_route)?;
    let res = &RESOURCES[res_idx];
    if path_ns.is_some() && !res.namespaced {
        return Err(ApiError::no_route());
    }
    if res.namespaced && path_ns.is_none() && name.is_some() {
        return Err(ApiError::no_route());
    }
    let status_only = match sub {
        None => false,
        Some("status") if res.status => true,
        Some(_) => return Err(ApiError::no_route()),
    };
    let ns = path_ns.unwrap_or("");
    let mut st;
    let reply = match (req.method.as_str(), name) {
        ("GET", None) => {
            let filter = Filter {
                res: res_idx,
                ns: path_ns.map(str::to_string),
                labels: parse_selector(&req.param("labelSelector").unwrap_or_default(), false)?,
                fields: parse_selector(&req.param("fieldSelector").unwrap_or_default(), true)?,
            };
            let watch = req.param("watch").is_some_and(|w| w == "true" || w == "1");
            if watch {
                let start = match req.param("resourceVersion").filter(|s| !s.is_empty()) {
                    None => None,
                    Some(s) => Some(s.parse::<u64>().map_err(|_| {
                        ApiError::bad_request(format!("invalid resourceVersion: {s}"))
                    })?),
                };
                let timeout = match req.param("timeoutSeconds") {
                    None => None,
                    Some(s) => Some(Duration::from_secs(s.parse::<u64>().map_err(|_| {
                        ApiError::bad_request(format!("invalid timeoutSeconds: {s}"))
                    })?)),
                };
                return Ok(Reply::Watch(WatchParams {
                    filter,
                    start,
                    bookmarks: req.param("allowWatchBookmarks").as_deref() == Some("true"),
                    timeout,
                }));
            }
            st = lock(&shared.state);
            let items: Vec<Value> = st
                .objects
                .iter()
                .filter(|(k, v)| k.0 == res_idx && filter.matches(v))
                .map(|(_, v)| v.clone())
                .collect();
            return Ok(Reply::Json(
                200,
                json!({"kind": format!("{}List", res.kind), "apiVersion": res.api_version(),
                       "metadata": {"resourceVersion": st.rv.to_string()}, "items": items}),
            ));
        }
        ("POST", None) if !status_only => {
            if res.namespaced && path_ns.is_none() {
                return Err(ApiError::new(
                    405,
                    "MethodNotAllowed",
                    "create needs a namespace in the path",
                ));
            }
            let body = parse_body(req)?;
            st = lock(&shared.state);
            st.create(res_idx, ns, body, false)
                .map(|o| Reply::Json(201, o))
        }
        ("GET", Some(n)) => {
            st = lock(&shared.state);
            st.objects
                .get(&(res_idx, ns.to_string(), n.to_string()))
                .map(|o| Reply::Json(200, o.clone()))
                .ok_or_else(|| ApiError::not_found(res, n))
        }
        ("PUT", Some(n)) => {
            let body = parse_body(req)?;
            st = lock(&shared.state);
            st.replace(res_idx, ns, n, body, status_only)
                .map(|o| Reply::Json(200, o))
        }
        ("PATCH", Some(n)) => {
            let ctype = req
                .header("content-type")
                .unwrap_or("")
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            let apply = ctype == "application/apply-patch+yaml";
            if !apply
                && ctype != "application/merge-patch+json"
                && ctype != "application/strategic-merge-patch+json"
            {
                return Err(ApiError::new(
                    415,
                    "UnsupportedMediaType",
                    format!("the body of the request was in an unknown format: {ctype}"),
                ));
            }
            let patch = parse_body(req)?;
            st = lock(&shared.state);
            let key = (res_idx, ns.to_string(), n.to_string());
            match st.objects.get(&key).cloned() {
                None if apply && !status_only => {
                    let mut obj = patch;
                    meta_mut(&mut obj)?.insert("name".into(), json!(n));
                    st.create(res_idx, ns, obj, false)
                        .map(|o| Reply::Json(201, o))
                }
                None => Err(ApiError::not_found(res, n)),
                Some(mut obj) => {
                    merge_patch(&mut obj, &patch);
                    st.replace(res_idx, ns, n, obj, status_only)
                        .map(|o| Reply::Json(200, o))
                }
            }
        }
        ("DELETE", Some(n)) if !status_only => {
            st = lock(&shared.state);
            st.delete(res_idx, ns, n).map(|o| Reply::Json(200, o))
        }
        _ => {
            return Err(ApiError::new(
                405,
                "MethodNotAllowed",
                format!("{} is not supported here", req.method),
            ))
        }
    };
    drop(st);
    shared.changed.notify_waiters();
    reply
}

fn event_line(typ: &str, obj: &Value) -> Bytes {
    let mut s = json!({"type": typ, "object": obj}).to_string();
    s.push('\n');
    Bytes::from(s)
}

/// Streams one watch into `tx`, one event per chunk: ends cleanly at its
/// timeout or after an ERROR event, abruptly when the watches are dropped
/// or the server stops.
async fn serve_watch(shared: Arc<Shared>, mut tx: BodySender, p: WatchParams) {
    let res = &RESOURCES[p.filter.res];
    let deadline = p.timeout.map(|t| Instant::now() + t);
    let mut next_bookmark = Instant::now() + BOOKMARK_INTERVAL;
    let mut lines = Vec::new();
    let (gen, mut cursor) = {
        let st = lock(&shared.state);
        let cursor = match p.start {
            None | Some(0) => {
                for (k, obj) in &st.objects {
                    if k.0 == p.filter.res && p.filter.matches(obj) {
                        lines.push(event_line("ADDED", obj));
                    }
                }
                st.rv
            }
            Some(n) => n,
        };
        (st.watch_gen, cursor)
    };
    loop {
        // Registered before the state is read: a change after this wakes us.
        let changed = shared.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let expired = {
            let st = lock(&shared.state);
            if shared.stop.load(Ordering::SeqCst) || st.watch_gen != gen {
                drop(st);
                tx.abort();
                return;
            }
            let expired = cursor < st.floor;
            if expired {
                let status = ApiError::new(
                    410,
                    "Expired",
                    format!("too old resource version: {cursor} ({})", st.floor),
                )
                .status();
                lines.push(event_line("ERROR", &status));
            } else {
                for e in st.history.iter().filter(|e| e.rv > cursor) {
                    if let Some((typ, obj)) = p.filter.event(e) {
                        lines.push(event_line(typ, &obj));
                    }
                }
                cursor = cursor.max(st.rv);
            }
            expired
        };
        for l in lines.drain(..) {
            if !tx.send(l).await {
                return;
            }
        }
        let now = Instant::now();
        if expired || deadline.is_some_and(|d| now >= d) {
            return; // the sender dropped: the terminating chunk
        }
        if p.bookmarks && now >= next_bookmark {
            let obj = json!({"kind": res.kind, "apiVersion": res.api_version(),
                             "metadata": {"resourceVersion": cursor.to_string()}});
            if !tx.send(event_line("BOOKMARK", &obj)).await {
                return;
            }
            next_bookmark = now + BOOKMARK_INTERVAL;
        }
        let mut wake = now + BOOKMARK_INTERVAL;
        if let Some(d) = deadline {
            wake = wake.min(d);
        }
        if p.bookmarks {
            wake = wake.min(next_bookmark);
        }
        tokio::select! {
            () = &mut changed => {}
            () = tokio::time::sleep_until(wake.into()) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use podlb::http::client::{self, BlockingConn, ReqBody};
    use podlb::http::Method;
    use std::io::{Read, Write};
    use std::net::TcpStream;

    const IO_TIMEOUT: Duration = Duration::from_secs(15);

    struct Resp {
        status: u16,
        body: Bytes,
    }

    impl Resp {
        fn json(&self) -> Value {
            serde_json::from_slice(&self.body).expect("JSON body")
        }
    }

    fn connect(api: &FakeApi) -> BlockingConn {
        BlockingConn::connect(api.addr(), IO_TIMEOUT).expect("connect")
    }

    /// A request as kube-rs sends them (with the bearer token).
    fn request(method: &str, path: &str, ctype: &str, body: &[u8]) -> http::Request<ReqBody> {
        client::request(Method::from_bytes(method.as_bytes()).unwrap(), path, "fake")
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .header(header::CONTENT_TYPE, ctype)
            .body(client::body(body.to_vec()))
            .unwrap()
    }

    fn send(c: &mut BlockingConn, method: &str, path: &str, ctype: &str, body: &[u8]) -> Resp {
        let r = c
            .fetch(request(method, path, ctype, body))
            .expect("response");
        Resp {
            status: r.status.as_u16(),
            body: r.body,
        }
    }

    fn call(api: &FakeApi, method: &str, path: &str, ctype: &str, body: Option<&Value>) -> Resp {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        send(&mut connect(api), method, path, ctype, body.as_bytes())
    }

    fn get(api: &FakeApi, path: &str) -> Resp {
        call(api, "GET", path, "application/json", None)
    }

    /// A watch stream whose every piece must be exactly one JSON event line.
    struct Watch(BlockingConn);

    impl Watch {
        fn open(api: &FakeApi, path: &str) -> Watch {
            let mut c = connect(api);
            let (status, headers) = c
                .open(request("GET", path, "application/json", b""))
                .expect("watch");
            assert_eq!(status, 200);
            assert_eq!(
                headers
                    .get(header::TRANSFER_ENCODING)
                    .and_then(|v| v.to_str().ok()),
                Some("chunked")
            );
            Watch(c)
        }

        /// Ok(None) at the clean end of the stream.
        fn next(&mut self) -> Result<Option<Value>, client::Error> {
            let Some(chunk) = self.0.chunk()? else {
                return Ok(None);
            };
            assert_eq!(chunk.last(), Some(&b'\n'), "event ends with a newline");
            assert_eq!(
                chunk.iter().filter(|&&b| b == b'\n').count(),
                1,
                "one event per chunk"
            );
            Ok(Some(serde_json::from_slice(&chunk).expect("event JSON")))
        }

        /// The next event that is not a BOOKMARK.
        fn event(&mut self) -> (String, Value) {
            loop {
                let e = self.next().expect("stream open").expect("stream not ended");
                let typ = e["type"].as_str().unwrap().to_string();
                if typ != "BOOKMARK" {
                    return (typ, e["object"].clone());
                }
            }
        }
    }

    fn start() -> FakeApi {
        FakeApi::start("127.0.0.1:0").expect("start fake API server")
    }

    fn svc(ns: &str, name: &str, labels: Value) -> Value {
        json!({"metadata": {"namespace": ns, "name": name, "labels": labels},
               "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}})
    }

    fn names(list: &Value) -> Vec<String> {
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["metadata"]["name"].as_str().unwrap().to_string())
            .collect()
    }

    fn rv_of(obj: &Value) -> u64 {
        obj["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_709_251_199), "2024-02-29T23:59:59Z");
    }

    #[test]
    fn list_with_selectors() {
        let api = start();
        api.create(
            "v1",
            "services",
            svc("a", "web", json!({"app": "web", "tier": "fe"})),
        )
        .unwrap();
        api.create("v1", "services", svc("a", "db", json!({"app": "db"})))
            .unwrap();
        api.create("v1", "services", svc("b", "web", json!({"app": "web"})))
            .unwrap();
        api.create(
            "v1",
            "nodes",
            json!({"metadata": {"name": "n1", "labels": {"zone": "z"}}}),
        )
        .unwrap();

        let r = get(&api, "/api/v1/namespaces/a/services");
        assert_eq!(r.status, 200);
        let list = r.json();
        assert_eq!(list["kind"], "ServiceList");
        assert_eq!(list["apiVersion"], "v1");
        assert_eq!(
            list["metadata"]["resourceVersion"],
            api.resource_version().to_string()
        );
        assert_eq!(names(&list), ["db", "web"]);
        assert!(list["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["kind"] == "Service"));

        let sel = |q: &str| names(&get(&api, &format!("/api/v1/services?{q}")).json());
        assert_eq!(sel("labelSelector=app%3Dweb"), ["web", "web"]);
        assert_eq!(sel("labelSelector=app%3D%3Dweb%2Ctier"), ["web"]);
        assert_eq!(sel("labelSelector=app!%3Dweb"), ["db"]);
        assert_eq!(sel("labelSelector=tier"), ["web"]);
        assert_eq!(sel("labelSelector=!tier"), ["db", "web"]);
        assert_eq!(sel("labelSelector=app=web,tier=fe"), ["web"]);
        assert_eq!(sel("fieldSelector=metadata.name%3Ddb"), ["db"]);
        let b = get(
            &api,
            "/api/v1/services?fieldSelector=metadata.namespace%3Db",
        )
        .json();
        assert_eq!(b["items"][0]["metadata"]["namespace"], "b");
        assert_eq!(b["items"].as_array().unwrap().len(), 1);
        assert_eq!(sel("fieldSelector=metadata.name!%3Dweb"), ["db"]);

        let bad = get(
            &api,
            "/api/v1/services?fieldSelector=spec.type%3DLoadBalancer",
        );
        assert_eq!(bad.status, 400);
        assert_eq!(bad.json()["reason"], "BadRequest");

        let nodes = get(&api, "/api/v1/nodes?labelSelector=zone%3Dz").json();
        assert_eq!(nodes["kind"], "NodeList");
        assert_eq!(names(&nodes), ["n1"]);
        assert_eq!(get(&api, "/api/v1/namespaces/a/nodes").status, 404);

        let eps = get(
            &api,
            "/apis/discovery.k8s.io/v1/namespaces/a/endpointslices",
        )
        .json();
        assert_eq!(eps["kind"], "EndpointSliceList");
        assert_eq!(eps["apiVersion"], "discovery.k8s.io/v1");
        assert_eq!(eps["items"], json!([]));
        assert_eq!(api.list("v1", "services", Some("a")).len(), 2);
        assert_eq!(api.list("v1", "services", None).len(), 3);
    }

    #[test]
    fn create_update_conflict_delete() {
        let api = start();
        let path = "/api/v1/namespaces/a/services";
        let r = call(
            &api,
            "POST",
            path,
            "application/json",
            Some(&svc("", "web", json!({}))),
        );
        assert_eq!(r.status, 201);
        let created = r.json();
        let md = &created["metadata"];
        assert_eq!(created["kind"], "Service");
        assert_eq!(md["namespace"], "a");
        assert_eq!(md["generation"], 1);
        assert!(!md["uid"].as_str().unwrap().is_empty());
        let ts = md["creationTimestamp"].as_str().unwrap();
        assert!(
            ts.len() == 20 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T',
            "{ts}"
        );
        let rv1 = rv_of(&created);
        assert_eq!(rv1, api.resource_version());

        let again = call(
            &api,
            "POST",
            path,
            "application/json",
            Some(&svc("a", "web", json!({}))),
        );
        assert_eq!(again.status, 409);
        let st = again.json();
        assert_eq!(
            (st["kind"].as_str(), st["reason"].as_str()),
            (Some("Status"), Some("AlreadyExists"))
        );
        assert_eq!(
            (st["status"].as_str(), st["code"].as_i64()),
            (Some("Failure"), Some(409))
        );
        let wrong_ns = call(
            &api,
            "POST",
            path,
            "application/json",
            Some(&svc("b", "x", json!({}))),
        );
        assert_eq!(wrong_ns.status, 400);

        let item = format!("{path}/web");
        let mut changed = created.clone();
        changed["spec"]["ports"][0]["port"] = json!(8080);
        let r = call(&api, "PUT", &item, "application/json", Some(&changed));
        assert_eq!(r.status, 200);
        let updated = r.json();
        assert!(rv_of(&updated) > rv1);
        assert_eq!(updated["metadata"]["generation"], 2);
        assert_eq!(updated["metadata"]["uid"], md["uid"]);

        // The same body again still carries the old resourceVersion: stale.
        let stale = call(&api, "PUT", &item, "application/json", Some(&changed));
        assert_eq!(stale.status, 409);
        assert_eq!(stale.json()["reason"], "Conflict");
        let direct = api.update("v1", "services", changed.clone()).unwrap_err();
        assert_eq!((direct.code, direct.reason), (409, "Conflict"));

        // Without a resourceVersion the write is unconditional.
        changed["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("resourceVersion");
        changed["metadata"]["labels"] = json!({"x": "1"});
        let r = call(&api, "PUT", &item, "application/json", Some(&changed));
        assert_eq!(r.status, 200);
        let r3 = r.json();
        assert_eq!(
            r3["metadata"]["generation"], 2,
            "metadata changes keep generation"
        );
        // A no-op write changes nothing.
        let same = api.update("v1", "services", r3.clone()).unwrap();
        assert_eq!(rv_of(&same), rv_of(&r3));

        let mut renamed = r3.clone();
        renamed["metadata"]["name"] = json!("other");
        assert_eq!(
            call(&api, "PUT", &item, "application/json", Some(&renamed)).status,
            400
        );

        let r = call(&api, "DELETE", &item, "application/json", None);
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["metadata"]["name"], "web");
        let gone = get(&api, &item);
        assert_eq!(gone.status, 404);
        let st = gone.json();
        assert_eq!(
            (st["reason"].as_str(), st["code"].as_i64()),
            (Some("NotFound"), Some(404))
        );
        assert_eq!(st["message"], "services \"web\" not found");
        assert_eq!(
            call(&api, "PUT", &item, "application/json", Some(&r3)).status,
            404
        );
        assert!(api.get("v1", "services", "a", "web").is_none());
        assert_eq!(
            api.delete("v1", "services", "a", "web").unwrap_err().code,
            404
        );
    }

    #[test]
    fn merge_patch_and_apply() {
        let api = start();
        api.create(
            "v1",
            "services",
            svc("a", "web", json!({"app": "web", "old": "x"})),
        )
        .unwrap();
        let item = "/api/v1/namespaces/a/services/web";
        let patch = json!({"metadata": {"labels": {"old": null, "new": "y"}},
                           "spec": {"ports": [{"port": 443}]}});
        let r = call(
            &api,
            "PATCH",
            item,
            "application/merge-patch+json",
            Some(&patch),
        );
        assert_eq!(r.status, 200);
        let o = r.json();
        assert_eq!(o["metadata"]["labels"], json!({"app": "web", "new": "y"}));
        assert_eq!(
            o["spec"],
            json!({"type": "LoadBalancer", "ports": [{"port": 443}]})
        );
        assert_eq!(o["metadata"]["generation"], 2);

        let patch = json!({"spec": {"loadBalancerClass": "podlb"}});
        let r = call(
            &api,
            "PATCH",
            item,
            "application/strategic-merge-patch+json",
            Some(&patch),
        );
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["spec"]["loadBalancerClass"], "podlb");

        let stale = json!({"metadata": {"resourceVersion": "1"}, "spec": {"type": "ClusterIP"}});
        let r = call(
            &api,
            "PATCH",
            item,
            "application/merge-patch+json",
            Some(&stale),
        );
        assert_eq!(r.status, 409);

        let r = call(
            &api,
            "PATCH",
            item,
            "application/json-patch+json",
            Some(&json!([])),
        );
        assert_eq!(r.status, 415);
        let r = call(
            &api,
            "PATCH",
            "/api/v1/namespaces/a/services/none",
            "application/merge-patch+json",
            Some(&patch),
        );
        assert_eq!(r.status, 404);

        // Server-side apply (simplified): creates when missing, else merges.
        let lease = "/apis/coordination.k8s.io/v1/namespaces/a/leases/l1?fieldManager=podlb";
        let body = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                          "spec": {"holderIdentity": "a"}});
        let r = call(
            &api,
            "PATCH",
            lease,
            "application/apply-patch+yaml",
            Some(&body),
        );
        assert_eq!(r.status, 201);
        let body = json!({"spec": {"holderIdentity": "b"}});
        let r = call(
            &api,
            "PATCH",
            lease,
            "application/apply-patch+yaml",
            Some(&body),
        );
        assert_eq!(r.status, 200);
        assert_eq!(
            api.get("coordination.k8s.io/v1", "leases", "a", "l1")
                .unwrap()["spec"]["holderIdentity"],
            "b"
        );
    }

    #[test]
    fn status_subresource_isolation() {
        let api = start();
        let path = "/api/v1/namespaces/a/services";
        let mut body = svc("a", "web", json!({}));
        body["status"] = json!({"loadBalancer": {"ingress": [{"ip": "198.18.0.1"}]}});
        let created = call(&api, "POST", path, "application/json", Some(&body)).json();
        assert!(created.get("status").is_none(), "create ignores status");

        let status_path = format!("{path}/web/status");
        let mut s = created.clone();
        s["status"] = json!({"loadBalancer": {"ingress": [{"ip": "198.18.0.10"}]}});
        s["spec"]["type"] = json!("ClusterIP");
        let r = call(&api, "PUT", &status_path, "application/json", Some(&s));
        assert_eq!(r.status, 200);
        let o = r.json();
        assert_eq!(
            o["status"]["loadBalancer"]["ingress"][0]["ip"],
            "198.18.0.10"
        );
        assert_eq!(
            o["spec"]["type"], "LoadBalancer",
            "status write leaves spec alone"
        );
        assert_eq!(o["metadata"]["generation"], 1);

        let mut main = o.clone();
        main["status"] = json!({});
        main["spec"]["type"] = json!("NodePort");
        let o = call(
            &api,
            "PUT",
            &format!("{path}/web"),
            "application/json",
            Some(&main),
        )
        .json();
        assert_eq!(o["spec"]["type"], "NodePort");
        assert_eq!(
            o["status"]["loadBalancer"]["ingress"][0]["ip"], "198.18.0.10",
            "main write leaves status alone"
        );

        let patch = json!({"status": {"loadBalancer": {"ingress": [{"ip": "198.18.0.11"}]}},
                           "spec": {"type": "ExternalName"}});
        let r = call(
            &api,
            "PATCH",
            &status_path,
            "application/merge-patch+json",
            Some(&patch),
        );
        let o = r.json();
        assert_eq!(
            o["status"]["loadBalancer"]["ingress"][0]["ip"],
            "198.18.0.11"
        );
        assert_eq!(o["spec"]["type"], "NodePort");
        let patch = json!({"status": {"loadBalancer": null}});
        let r = call(
            &api,
            "PATCH",
            &format!("{path}/web"),
            "application/merge-patch+json",
            Some(&patch),
        );
        assert_eq!(
            r.json()["status"]["loadBalancer"]["ingress"][0]["ip"],
            "198.18.0.11"
        );

        let direct = api
            .update_status(
                "v1",
                "services",
                json!({"metadata": {"namespace": "a", "name": "web"}, "status": {}, "spec": {}}),
            )
            .unwrap();
        assert_eq!(direct["status"], json!({}));
        assert_eq!(direct["spec"]["type"], "NodePort");
        // No status subresource on EndpointSlices.
        api.create(
            "discovery.k8s.io/v1",
            "endpointslices",
            json!({"metadata": {"namespace": "a", "name": "e"}, "endpoints": []}),
        )
        .unwrap();
        let r = get(
            &api,
            "/apis/discovery.k8s.io/v1/namespaces/a/endpointslices/e/status",
        );
        assert_eq!(r.status, 404);
    }

    #[test]
    fn watch_from_resource_version_delivers_later_events_in_order() {
        let api = start();
        api.create("v1", "services", svc("a", "old", json!({})))
            .unwrap();
        let rv0 = api.resource_version();
        let b = api
            .create("v1", "services", svc("a", "b", json!({})))
            .unwrap();
        api.create("v1", "services", svc("other", "x", json!({})))
            .unwrap();
        api.create(
            "discovery.k8s.io/v1",
            "endpointslices",
            json!({"metadata": {"namespace": "a", "name": "e"}}),
        )
        .unwrap();
        let mut b2 = b.clone();
        b2["spec"]["ports"] = json!([{"port": 81}]);
        api.update("v1", "services", b2).unwrap();
        api.delete("v1", "services", "a", "old").unwrap();

        let mut w = Watch::open(
            &api,
            &format!(
                "/api/v1/namespaces/a/services?watch=true&resourceVersion={rv0}&timeoutSeconds=10"
            ),
        );
        let mut seen = Vec::new();
        for _ in 0..3 {
            let (typ, obj) = w.event();
            assert_eq!(obj["kind"], "Service");
            seen.push((
                typ,
                obj["metadata"]["name"].as_str().unwrap().to_string(),
                rv_of(&obj),
            ));
        }
        let kinds: Vec<(&str, &str)> = seen
            .iter()
            .map(|(t, n, _)| (t.as_str(), n.as_str()))
            .collect();
        assert_eq!(
            kinds,
            [("ADDED", "b"), ("MODIFIED", "b"), ("DELETED", "old")]
        );
        assert!(
            seen.windows(2).all(|p| p[0].2 < p[1].2),
            "increasing resourceVersions"
        );
        assert!(seen[0].2 > rv0);
        assert_eq!(seen[2].2, api.resource_version());

        // Then live events; other namespaces and resources stay out.
        api.create("v1", "services", svc("other", "y", json!({})))
            .unwrap();
        let c = api
            .create("v1", "services", svc("a", "c", json!({})))
            .unwrap();
        let (typ, obj) = w.event();
        assert_eq!(
            (typ.as_str(), obj["metadata"]["name"].as_str()),
            ("ADDED", Some("c"))
        );
        assert_eq!(rv_of(&obj), rv_of(&c));
    }

    #[test]
    fn watch_with_label_selector_follows_membership() {
        let api = start();
        // resourceVersion=0 means "from the current state" (the events
        // before the server handles the watch would be folded into it), so
        // start from a real version: one object first.
        api.create("v1", "services", svc("a", "other", json!({})))
            .unwrap();
        let rv0 = api.resource_version();
        assert!(rv0 > 0);
        let mut w = Watch::open(
            &api,
            &format!("/api/v1/services?watch=true&resourceVersion={rv0}&labelSelector=app%3Dweb"),
        );
        let s = api
            .create("v1", "services", svc("a", "s", json!({"app": "db"})))
            .unwrap();
        let mut s2 = s.clone();
        s2["metadata"]["labels"] = json!({"app": "web"});
        let s2 = api.update("v1", "services", s2).unwrap();
        let mut s3 = s2.clone();
        s3["metadata"]["labels"] = json!({"app": "db"});
        let s3 = api.update("v1", "services", s3).unwrap();
        let (t, o) = w.event();
        assert_eq!((t.as_str(), rv_of(&o)), ("ADDED", rv_of(&s2)));
        let (t, o) = w.event();
        assert_eq!((t.as_str(), rv_of(&o)), ("DELETED", rv_of(&s3)));
        assert_eq!(
            o["metadata"]["labels"]["app"], "web",
            "the last state that matched"
        );
    }

    #[test]
    fn watch_from_zero_starts_with_synthetic_added() {
        let api = start();
        let a = api
            .create("v1", "services", svc("a", "a", json!({})))
            .unwrap();
        let b = api
            .create("v1", "services", svc("a", "b", json!({})))
            .unwrap();
        for q in ["resourceVersion=0&", ""] {
            let mut w = Watch::open(&api, &format!("/api/v1/namespaces/a/services?{q}watch=1"));
            let (t1, o1) = w.event();
            let (t2, o2) = w.event();
            assert_eq!((t1.as_str(), t2.as_str()), ("ADDED", "ADDED"));
            assert_eq!((o1, o2), (a.clone(), b.clone()));
        }
        let mut w = Watch::open(
            &api,
            "/api/v1/namespaces/a/services?watch=true&resourceVersion=0",
        );
        w.event();
        w.event();
        let mut b2 = b.clone();
        b2["metadata"]["labels"] = json!({"k": "v"});
        api.update("v1", "services", b2).unwrap();
        let (t, o) = w.event();
        assert_eq!(
            (t.as_str(), o["metadata"]["labels"]["k"].as_str()),
            ("MODIFIED", Some("v"))
        );
    }

    #[test]
    fn bookmarks_arrive() {
        let api = start();
        api.create("v1", "services", svc("a", "a", json!({})))
            .unwrap();
        let rv = api.resource_version();
        let begun = Instant::now();
        let mut w = Watch::open(&api, &format!(
            "/api/v1/namespaces/a/services?watch=true&resourceVersion={rv}&allowWatchBookmarks=true"));
        for _ in 0..2 {
            let e = w.next().unwrap().unwrap();
            assert_eq!(e["type"], "BOOKMARK");
            assert_eq!(
                e["object"],
                json!({"kind": "Service", "apiVersion": "v1",
                                            "metadata": {"resourceVersion": rv.to_string()}})
            );
        }
        assert!(begun.elapsed() < Duration::from_secs(4));
        // A bookmark after a change carries the newer resourceVersion.
        api.create("v1", "services", svc("a", "b", json!({})))
            .unwrap();
        assert_eq!(w.next().unwrap().unwrap()["type"], "ADDED");
        let e = w.next().unwrap().unwrap();
        assert_eq!(e["type"], "BOOKMARK");
        assert_eq!(
            e["object"]["metadata"]["resourceVersion"],
            (rv + 1).to_string()
        );
    }

    #[test]
    fn compacted_resource_version_gets_410_expired() {
        let api = start();
        api.create("v1", "services", svc("a", "a", json!({})))
            .unwrap();
        let old = api.resource_version();
        api.create("v1", "services", svc("a", "b", json!({})))
            .unwrap();
        api.compact();
        let mut w = Watch::open(
            &api,
            &format!("/api/v1/services?watch=true&resourceVersion={old}"),
        );
        let e = w.next().unwrap().unwrap();
        assert_eq!(e["type"], "ERROR");
        let st = &e["object"];
        assert_eq!(
            (st["kind"].as_str(), st["code"].as_i64()),
            (Some("Status"), Some(410))
        );
        assert_eq!(st["reason"], "Expired");
        assert!(st["message"]
            .as_str()
            .unwrap()
            .starts_with("too old resource version: "));
        assert!(
            w.next().unwrap().is_none(),
            "the stream ends after the error"
        );

        // From the current resourceVersion the watch works.
        let now = api.resource_version();
        let mut w = Watch::open(
            &api,
            &format!("/api/v1/services?watch=true&resourceVersion={now}"),
        );
        api.create("v1", "services", svc("a", "c", json!({})))
            .unwrap();
        assert_eq!(w.event().0, "ADDED");
    }

    #[test]
    fn history_overflow_expires_old_versions() {
        let api = start();
        let first = json!({"metadata": {"namespace": "a", "name": "first"}});
        api.create("v1", "events", first).unwrap();
        let rv0 = api.resource_version();
        api.create(
            "v1",
            "events",
            json!({"metadata": {"namespace": "a", "name": "e"}}),
        )
        .unwrap();
        for i in 0..HISTORY_LIMIT {
            let ev = json!({"metadata": {"namespace": "a", "name": "e"}, "count": i});
            api.update("v1", "events", ev).unwrap();
        }
        let mut w = Watch::open(
            &api,
            &format!("/api/v1/events?watch=true&resourceVersion={rv0}"),
        );
        assert_eq!(w.next().unwrap().unwrap()["object"]["code"], 410);
        let mut w = Watch::open(
            &api,
            &format!("/api/v1/events?watch=true&resourceVersion={}", rv0 + 1),
        );
        assert_eq!(w.event().0, "MODIFIED");
    }

    #[test]
    fn drop_watches_ends_streams_abruptly() {
        let api = start();
        let mut w1 = Watch::open(&api, "/api/v1/services?watch=true");
        let mut w2 = Watch::open(&api, "/apis/coordination.k8s.io/v1/leases?watch=true&allowWatchBookmarks=true&resourceVersion=0");
        thread::sleep(Duration::from_millis(50));
        let begun = Instant::now();
        api.drop_watches();
        for w in [&mut w1, &mut w2] {
            loop {
                match w.next() {
                    Ok(Some(e)) => assert_eq!(e["type"], "BOOKMARK"),
                    Ok(None) => panic!("a dropped watch must not end cleanly"),
                    Err(e) => {
                        assert!(!matches!(e, client::Error::Timeout(_)), "timed out");
                        break;
                    }
                }
            }
        }
        assert!(begun.elapsed() < Duration::from_secs(2));
        // New watches work.
        let mut w = Watch::open(&api, "/api/v1/services?watch=true");
        api.create("v1", "services", svc("a", "a", json!({})))
            .unwrap();
        assert_eq!(w.event().0, "ADDED");
    }

    #[test]
    fn unavailable_answers_503() {
        let api = start();
        let mut w = Watch::open(&api, "/api/v1/services?watch=true");
        api.set_unavailable(true);
        assert!(w.next().is_err(), "open watches are dropped");
        for path in ["/api/v1/services", "/version", "/apis"] {
            let r = get(&api, path);
            assert_eq!(r.status, 503);
            assert_eq!(r.json()["reason"], "ServiceUnavailable");
            assert_eq!(r.json()["code"], 503);
        }
        api.set_unavailable(false);
        assert_eq!(get(&api, "/api/v1/services").status, 200);
    }

    #[test]
    fn chunked_watch_is_well_formed_and_times_out() {
        let api = start();
        api.create("v1", "services", svc("a", "a", json!({})))
            .unwrap();
        api.create("v1", "services", svc("a", "b", json!({})))
            .unwrap();
        let mut s = TcpStream::connect(api.addr()).unwrap();
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let begun = Instant::now();
        s.write_all(b"GET /api/v1/services?watch=true&timeoutSeconds=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).unwrap();
        let elapsed = begun.elapsed();
        assert!(elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(3));
        let text = String::from_utf8(raw).unwrap();
        let (head, mut body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(head.contains("\r\nTransfer-Encoding: chunked"));
        assert!(!head.to_ascii_lowercase().contains("content-length"));
        let mut events = Vec::new();
        loop {
            let (size, rest) = body.split_once("\r\n").expect("chunk size line");
            let size = usize::from_str_radix(size, 16).expect("hex size");
            if size == 0 {
                assert_eq!(rest, "\r\n", "terminating chunk, then nothing");
                break;
            }
            let (data, rest) = rest.split_at(size);
            assert!(rest.starts_with("\r\n"));
            assert!(data.ends_with('\n') && data.matches('\n').count() == 1);
            events.push(serde_json::from_str::<Value>(data).unwrap()["type"].clone());
            body = &rest[2..];
        }
        assert_eq!(events, [json!("ADDED"), json!("ADDED")]);
    }

    #[test]
    fn discovery_keepalive_and_request_log() {
        let api = start();
        let mut c = connect(&api);
        let mut ask = |path: &str| send(&mut c, "GET", path, "application/json", b"");
        let v = ask("/version");
        assert_eq!((v.status, v.json()["major"].as_str()), (200, Some("1")));
        assert_eq!(ask("/api").json()["versions"], json!(["v1"]));
        let groups = ask("/apis").json();
        let names: Vec<&str> = groups["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["discovery.k8s.io", "coordination.k8s.io"]);
        let core = ask("/api/v1").json();
        let res: Vec<&str> = core["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert!(
            res.contains(&"services") && res.contains(&"services/status") && res.contains(&"nodes")
        );
        assert_eq!(
            ask("/apis/discovery.k8s.io/v1").json()["resources"][0]["kind"],
            "EndpointSlice"
        );
        assert_eq!(ask("/apis/coordination.k8s.io").json()["kind"], "APIGroup");
        assert_eq!(ask("/apis/nope/v1").status, 404);
        assert_eq!(ask("/api/v1/widgets").status, 404);
        assert_eq!(
            ask("/api/v1/namespaces/a/services").status,
            200,
            "same connection"
        );

        // A watch that ends by timeout leaves the connection usable.
        let (status, _) = c
            .open(request(
                "GET",
                "/api/v1/services?watch=true&timeoutSeconds=0",
                "application/json",
                b"",
            ))
            .unwrap();
        assert_eq!(status, 200);
        assert!(c.chunk().unwrap().is_none());
        assert_eq!(
            send(&mut c, "GET", "/version", "application/json", b"").status,
            200
        );

        let log = api.requests();
        assert_eq!(log.len(), 11);
        assert_eq!(
            (log[0].method.as_str(), log[0].path.as_str()),
            ("GET", "/version")
        );
        assert_eq!(log[9].query, "watch=true&timeoutSeconds=0");
        assert_eq!(
            log[0].authorization.as_deref(),
            Some("Bearer fakeapi-token")
        );

        // Oversized heads are refused.
        let mut s = TcpStream::connect(api.addr()).unwrap();
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(20_000));
        let _ = s.write_all(big.as_bytes());
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        assert!(out.starts_with("HTTP/1.1 431"), "{out}");
    }

    #[test]
    fn kubeconfig_and_drop_stop_everything() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let api = FakeApi::from_listener(listener).unwrap();
        let path = std::env::temp_dir().join(format!("fakeapi-kubeconfig-{}", std::process::id()));
        api.write_kubeconfig(&path, "podlb-system").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert!(text.contains(&format!(
            "    server: http://127.0.0.1:{}\n",
            api.addr().port()
        )));
        assert!(text.contains(&format!("    token: {TOKEN}\n")));
        assert!(text.contains("    namespace: podlb-system\n"));
        assert!(text.contains("current-context: fakeapi\n"));
        assert_eq!(api.url(), format!("http://{}", api.addr()));

        let addr = api.addr();
        let mut w = Watch::open(&api, "/api/v1/services?watch=true");
        let mut idle = TcpStream::connect(api.addr()).unwrap();
        thread::sleep(Duration::from_millis(50));
        let begun = Instant::now();
        drop(api);
        assert!(begun.elapsed() < JOIN_DEADLINE);
        assert!(w.next().is_err());
        let mut buf = [0u8; 1];
        assert!(matches!(idle.read(&mut buf), Ok(0) | Err(_)));
        assert!(TcpStream::connect(addr).is_err(), "listener closed");
    }
}
