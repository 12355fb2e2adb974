//! A real Kubernetes control plane in a lab namespace (issue 14): etcd,
//! kube-apiserver (RBAC, a service-account signing key, a service CIDR in
//! 198.18.0.0/15, and optionally one in 2001:2::/48: dual-stack),
//! kube-controller-manager (EndpointSlice, service-account
//! and token controllers, among others) and, per node namespace,
//! kube-proxy — the upstream binaries, built from the Go modules pinned in
//! `netns-tests/kube/` by `netns-tests/deps.sh` into a cache keyed by
//! version.
//!
//! No kubelet can run here, so the lab stands in for it in exactly one way:
//! it sets Pod and Node `status` through the API (pod IP, Ready; node
//! addresses). Everything else — EndpointSlices, tokens, RBAC decisions,
//! kube-proxy's rules — comes from the real components.
//!
//! Identities: the lab's own requests use a static admin token
//! (`system:masters`); the controller manager and kube-proxy run as
//! `system:kube-controller-manager` and `system:kube-proxy`, so the
//! default RBAC bindings apply to them; podlb gets a token of its own
//! ServiceAccount ([`KubeCluster::token`]) and so exactly the rights the
//! manifests in `deploy/kubernetes/` grant.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::netns::{self, NetnsError, Proc, Topology};

/// kube-apiserver's secure port.
pub const API_PORT: u16 = 6443;
/// `--service-cluster-ip-range`: inside the benchmarking range.
pub const SERVICE_CIDR: &str = "198.19.128.0/20";
/// The IPv6 service range of a dual-stack control plane
/// ([`KubeCluster::start_dual_stack`]): inside 2001:2::/48 (RFC 5180), and
/// a /112, small enough for either of the API server's ClusterIP
/// allocators (the older bitmap one takes at most a /108).
pub const SERVICE_CIDR_V6: &str = "2001:2:0:ffff::/112";
/// The Kubernetes release the binaries are built from.
pub const K8S_VERSION: &str = pinned("k8s.io/kubernetes", K8S_GO_MOD);
/// The etcd release.
pub const ETCD_VERSION: &str = pinned("go.etcd.io/etcd/server/v3", ETCD_GO_MOD);

const K8S_GO_MOD: &str = include_str!("../../../netns-tests/kube/go.mod");
const ETCD_GO_MOD: &str = include_str!("../../../netns-tests/kube/etcd/go.mod");

/// How long one kubectl call may take.
const KUBECTL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a component may take to come up.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Errors of the Kubernetes lab.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// The binaries are not built yet.
    #[error("the Kubernetes binaries are not in {0} (build them with netns-tests/deps.sh)")]
    NotBuilt(PathBuf),
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// A component did not come up in time.
    #[error("{what} did not become ready within {secs} s; last log lines:\n{log}")]
    NotReady {
        what: String,
        secs: u64,
        log: String,
    },
    /// kubectl failed.
    #[error("kubectl {args}: {stderr}")]
    Kubectl { args: String, stderr: String },
    /// kubectl printed something that is not the JSON asked for.
    #[error("kubectl {args}: bad JSON: {error}")]
    BadJson { args: String, error: String },
}

type Result<T> = std::result::Result<T, KubeError>;

/// The version of `module` in a go.mod's require block (at compile time).
const fn pinned(module: &str, go_mod: &'static str) -> &'static str {
    // A const fn cannot use str methods that allocate; scan bytes.
    let b = go_mod.as_bytes();
    let m = module.as_bytes();
    let mut i = 0;
    while i + m.len() + 1 < b.len() {
        let at_line_start = i == 0 || b[i - 1] == b'\t' || b[i - 1] == b'\n' || b[i - 1] == b' ';
        let mut j = 0;
        while j < m.len() && b[i + j] == m[j] {
            j += 1;
        }
        if at_line_start && j == m.len() && b[i + j] == b' ' && b[i + j + 1] == b'v' {
            let start = i + j + 1;
            let mut end = start;
            while end < b.len() && b[end] != b'\n' && b[end] != b' ' && b[end] != b'\r' {
                end += 1;
            }
            let (_, tail) = go_mod.split_at(start);
            let (v, _) = tail.split_at(end - start);
            return v;
        }
        i += 1;
    }
    panic!("module not pinned in go.mod")
}

/// Where the built binaries are: `$PODLB_KUBE_DIR`, else the cache
/// directory `netns-tests/deps.sh` builds into.
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("PODLB_KUBE_DIR") {
        return PathBuf::from(d);
    }
    let cache = std::env::var_os("PODLB_KUBE_CACHE")
        .map_or_else(|| PathBuf::from("/var/cache/podlb"), PathBuf::from);
    cache.join(format!("kube-{K8S_VERSION}-etcd-{ETCD_VERSION}"))
}

/// Whether the binaries are built (tests that need them say why they skip
/// otherwise; CI builds them first).
pub fn available() -> bool {
    let d = bin_dir();
    d.join("kube").is_file() && d.join("etcd").is_file()
}

/// A running control plane. Its processes belong to the [`Topology`] (killed
/// when it drops), its files to the topology's directory.
pub struct KubeCluster {
    ns: String,
    addr: Ipv4Addr,
    dir: PathBuf,
    kube: PathBuf,
    etcd: PathBuf,
    admin_kubeconfig: PathBuf,
    apiserver: Mutex<Option<Proc>>,
    apiserver_args: Vec<String>,
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> KubeError {
    let what = what.into();
    move |source| KubeError::Io { what, source }
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(io_err(format!("writing {}", path.display())))
}

/// A random token (hex of 16 bytes from /dev/urandom).
fn random_token() -> Result<String> {
    use std::io::Read;
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(io_err("reading /dev/urandom"))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

fn openssl(args: &[&str]) -> Result<()> {
    let mut c = std::process::Command::new("openssl");
    c.args(args);
    let out = netns::run_with_timeout(c, Duration::from_secs(30))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(KubeError::Kubectl {
            args: format!("(openssl) {}", args.join(" ")),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}

/// A kubeconfig for `server` trusting `ca`, authenticating with `token`.
pub fn kubeconfig_text(server: &str, ca: &Path, token: &str, namespace: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: lab\n  cluster:\n    server: {server}\n    certificate-authority: {}\n\
         users:\n- name: lab\n  user:\n    token: {token}\n\
         contexts:\n- name: lab\n  context:\n    cluster: lab\n    user: lab\n    namespace: {namespace}\n\
         current-context: lab\n",
        ca.display()
    )
}

impl KubeCluster {
    /// Starts etcd, kube-apiserver and kube-controller-manager in the
    /// namespace of host `role` of `topo` (which must exist; the API server
    /// listens on that host's address, port [`API_PORT`]) and waits until
    /// the API answers and the controllers made the `default`
    /// ServiceAccount.
    pub fn start(topo: &Topology, role: &str) -> Result<KubeCluster> {
        Self::start_with(topo, role, SERVICE_CIDR)
    }

    /// [`KubeCluster::start`] with a dual-stack API server (KEP-563):
    /// `--service-cluster-ip-range` is [`SERVICE_CIDR`] and
    /// [`SERVICE_CIDR_V6`], IPv4 primary. Services then get `ipFamilies`
    /// by their `ipFamilyPolicy`, and the EndpointSlice controller writes
    /// an `IPv6` slice beside the `IPv4` one from Pods whose
    /// `status.podIPs` has both families ([`KubeCluster::set_pod_ips`]).
    /// The controller manager needs no flag for that: only its node IPAM
    /// controller (not run here) reads the service ranges.
    pub fn start_dual_stack(topo: &Topology, role: &str) -> Result<KubeCluster> {
        Self::start_with(topo, role, &format!("{SERVICE_CIDR},{SERVICE_CIDR_V6}"))
    }

    fn start_with(topo: &Topology, role: &str, service_ranges: &str) -> Result<KubeCluster> {
        let bins = bin_dir();
        let (kube, etcd) = (bins.join("kube"), bins.join("etcd"));
        if !kube.is_file() || !etcd.is_file() {
            return Err(KubeError::NotBuilt(bins));
        }
        let host = topo.host(role)?;
        let (ns, addr) = (host.ns.clone(), host.addr);
        let dir = topo.dir().join("kube");
        std::fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
        let p = |f: &str| dir.join(f).display().to_string();

        // A CA, the API server's certificate (its address and the first
        // service address, as kubeadm does) and the service-account key.
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=podlb-lab-ca",
            "-keyout",
            &p("ca.key"),
            "-out",
            &p("ca.crt"),
        ])?;
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=kube-apiserver",
            "-keyout",
            &p("apiserver.key"),
            "-out",
            &p("apiserver.csr"),
        ])?;
        write(
            &dir.join("san.cnf"),
            &format!(
                "subjectAltName=IP:{addr},IP:198.19.128.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc\n"
            ),
        )?;
        openssl(&[
            "x509",
            "-req",
            "-days",
            "2",
            "-in",
            &p("apiserver.csr"),
            "-CA",
            &p("ca.crt"),
            "-CAkey",
            &p("ca.key"),
            "-CAcreateserial",
            "-extfile",
            &p("san.cnf"),
            "-out",
            &p("apiserver.crt"),
        ])?;
        openssl(&["genrsa", "-out", &p("sa.key"), "2048"])?;
        openssl(&["rsa", "-in", &p("sa.key"), "-pubout", "-out", &p("sa.pub")])?;

        // Static tokens for the lab (admin) and the two components, so
        // the default RBAC bindings of those users apply.
        let (admin, cm, proxy) = (random_token()?, random_token()?, random_token()?);
        write(
            &dir.join("tokens.csv"),
            &format!(
                "{admin},lab-admin,lab-admin,system:masters\n\
                 {cm},system:kube-controller-manager,kube-controller-manager\n\
                 {proxy},system:kube-proxy,kube-proxy\n"
            ),
        )?;
        let server = format!("https://{addr}:{API_PORT}");
        let ca = dir.join("ca.crt");
        let admin_kubeconfig = dir.join("admin.kubeconfig");
        write(
            &admin_kubeconfig,
            &kubeconfig_text(&server, &ca, &admin, "default"),
        )?;
        write(
            &dir.join("cm.kubeconfig"),
            &kubeconfig_text(&server, &ca, &cm, "kube-system"),
        )?;
        write(
            &dir.join("proxy.kubeconfig"),
            &kubeconfig_text(&server, &ca, &proxy, "kube-system"),
        )?;

        let etcd_s = etcd.display().to_string();
        let etcd_proc = topo.spawn(
            &ns,
            "etcd",
            &[
                &etcd_s,
                "--data-dir",
                &p("etcd"),
                "--listen-client-urls",
                "http://127.0.0.1:2379",
                "--advertise-client-urls",
                "http://127.0.0.1:2379",
                "--listen-peer-urls",
                "http://127.0.0.1:2380",
                "--log-level",
                "warn",
            ],
        )?;
        let apiserver_args: Vec<String> = [
            "kube-apiserver".to_string(),
            "--etcd-servers=http://127.0.0.1:2379".into(),
            format!("--bind-address={addr}"),
            format!("--advertise-address={addr}"),
            format!("--secure-port={API_PORT}"),
            "--authorization-mode=Node,RBAC".into(),
            format!("--service-cluster-ip-range={service_ranges}"),
            "--service-account-issuer=https://kubernetes.default.svc".into(),
            format!("--service-account-key-file={}", p("sa.pub")),
            format!("--service-account-signing-key-file={}", p("sa.key")),
            format!("--token-auth-file={}", p("tokens.csv")),
            format!("--tls-cert-file={}", p("apiserver.crt")),
            format!("--tls-private-key-file={}", p("apiserver.key")),
            format!("--client-ca-file={}", p("ca.crt")),
            "--v=1".into(),
        ]
        .into();
        let c = KubeCluster {
            ns: ns.clone(),
            addr,
            dir: dir.clone(),
            kube,
            etcd,
            admin_kubeconfig,
            apiserver: Mutex::new(None),
            apiserver_args,
        };
        c.wait_until("etcd", &etcd_proc, || {
            netns::exec(&ns, &["curl", "-sf", "http://127.0.0.1:2379/health"])
                .is_ok_and(|o| o.status.success())
        })?;
        c.start_apiserver(topo)?;
        let kube_s = c.kube.display().to_string();
        let cm_proc = topo.spawn(
            &ns,
            "kube-controller-manager",
            &[
                &kube_s, "kube-controller-manager",
                &format!("--kubeconfig={}", p("cm.kubeconfig")),
                "--controllers=endpointslice,endpointslicemirroring,serviceaccount,serviceaccount-token,namespace,garbagecollector,clusterrole-aggregation",
                "--use-service-account-credentials=true",
                &format!("--service-account-private-key-file={}", p("sa.key")),
                &format!("--root-ca-file={}", p("ca.crt")),
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                "--secure-port=10257",
                "--authentication-skip-lookup=true",
            ],
        )?;
        c.wait_until("kube-controller-manager", &cm_proc, || {
            c.kubectl(&["get", "serviceaccount", "default", "-n", "default"])
                .is_ok()
        })?;
        Ok(c)
    }

    /// Starts kube-apiserver (again, after [`KubeCluster::stop_apiserver`])
    /// and waits for `/readyz`.
    pub fn start_apiserver(&self, topo: &Topology) -> Result<()> {
        let kube_s = self.kube.display().to_string();
        let mut args: Vec<&str> = vec![&kube_s];
        args.extend(self.apiserver_args.iter().map(String::as_str));
        let proc = topo.spawn(&self.ns, "kube-apiserver", &args)?;
        self.wait_until("kube-apiserver", &proc, || {
            self.kubectl(&["get", "--raw", "/readyz"]).is_ok()
        })?;
        *self
            .apiserver
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(proc);
        Ok(())
    }

    /// Kills kube-apiserver (SIGKILL: a crash, not a graceful stop).
    pub fn stop_apiserver(&self) {
        if let Some(p) = self
            .apiserver
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        {
            p.kill();
        }
    }

    /// Freezes (SIGSTOP) or thaws (SIGCONT) kube-apiserver: requests sent
    /// meanwhile wait, and are all answered once it continues (to line up
    /// two clients' reads of the same resourceVersion).
    pub fn pause_apiserver(&self, paused: bool) -> Result<()> {
        if let Some(p) = self
            .apiserver
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
        {
            p.signal(if paused { "STOP" } else { "CONT" })?;
        }
        Ok(())
    }

    fn wait_until(&self, what: &str, proc: &Proc, mut ok: impl FnMut() -> bool) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if ok() {
                return Ok(());
            }
            if Instant::now() >= deadline || !proc.is_running() {
                return Err(KubeError::NotReady {
                    what: what.to_string(),
                    secs: START_TIMEOUT.as_secs(),
                    log: proc.log_tail(3000),
                });
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The API server's URL.
    pub fn server(&self) -> String {
        format!("https://{}:{API_PORT}", self.addr)
    }
    /// The CA that signed the API server's certificate.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
    /// The lab's own (admin) kubeconfig.
    pub fn admin_kubeconfig(&self) -> &Path {
        &self.admin_kubeconfig
    }
    /// The cluster's files (certificates, kubeconfigs, manifests written).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// The namespace the control plane runs in.
    pub fn ns(&self) -> &str {
        &self.ns
    }

    /// Runs kubectl as the lab's admin; returns stdout.
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        self.kubectl_as(&self.admin_kubeconfig, args)
    }

    /// Runs kubectl with another kubeconfig (e.g. podlb's token, to check
    /// what its RBAC allows).
    pub fn kubectl_as(&self, kubeconfig: &Path, args: &[&str]) -> Result<String> {
        let kube_s = self.kube.display().to_string();
        let kc = format!("--kubeconfig={}", kubeconfig.display());
        let mut full: Vec<&str> = vec![&kube_s, "kubectl", &kc];
        full.extend_from_slice(args);
        let out = netns::exec_timeout(&self.ns, &full, KUBECTL_TIMEOUT)?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(KubeError::Kubectl {
                args: args.join(" "),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            })
        }
    }

    /// `kubectl get <args> -o json`, parsed.
    pub fn get_json(&self, args: &[&str]) -> Result<Value> {
        let mut a = vec!["get"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["-o", "json"]);
        let out = self.kubectl(&a)?;
        serde_json::from_str(&out).map_err(|e| KubeError::BadJson {
            args: args.join(" "),
            error: e.to_string(),
        })
    }

    /// `kubectl apply` of one object or a `List`, written to a file first.
    pub fn apply(&self, obj: &Value) -> Result<String> {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = self.dir.join(format!("apply-{n}.json"));
        write(&path, &obj.to_string())?;
        self.kubectl(&["apply", "-f", &path.display().to_string()])
    }

    /// Merge-patches the `status` subresource of `resource/name` (the
    /// lab's stand-in for the kubelet).
    pub fn patch_status(
        &self,
        resource: &str,
        ns: Option<&str>,
        name: &str,
        patch: &Value,
    ) -> Result<()> {
        let target = format!("{resource}/{name}");
        let patch = patch.to_string();
        let mut args = vec![
            "patch",
            &target,
            "--subresource=status",
            "--type=merge",
            "-p",
            &patch,
        ];
        if let Some(ns) = ns {
            args.extend_from_slice(&["-n", ns]);
        }
        self.kubectl(&args).map(drop)
    }

    /// Registers a Node named `name` with `ip` as its InternalIP, Ready.
    pub fn add_node(&self, name: &str, ip: Ipv4Addr) -> Result<()> {
        self.apply(&json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}}))?;
        self.patch_status(
            "node",
            None,
            name,
            &json!({"status": {
                "addresses": [{"type": "InternalIP", "address": ip.to_string()},
                              {"type": "Hostname", "address": name}],
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                "message": "set by podlb's lab (no kubelet runs here)"}],
            }}),
        )
    }

    /// Creates Pod `name` on node `node` with `labels` and a container port
    /// 80 named `http`; its status is set separately ([`Self::set_pod`]).
    pub fn add_pod(&self, ns: &str, name: &str, labels: &Value, node: &str) -> Result<()> {
        self.apply(&json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {
                "nodeName": node,
                "containers": [{"name": "app", "image": "registry.invalid/none",
                                "ports": [{"name": "http", "containerPort": 80}]}],
            },
        }))
        .map(drop)
    }

    /// Sets Pod `name`'s status as a kubelet would: Running with `ip`, and
    /// the Ready condition `ready`.
    pub fn set_pod(&self, ns: &str, name: &str, ip: Ipv4Addr, ready: bool) -> Result<()> {
        self.set_pod_ips(ns, name, &[ip.into()], ready)
    }

    /// [`KubeCluster::set_pod`] with one address per family, as a kubelet
    /// on a dual-stack node writes them: `podIP` is the first, `podIPs`
    /// all of them (the API server requires at most one per family, the
    /// first equal to `podIP`).
    pub fn set_pod_ips(&self, ns: &str, name: &str, ips: &[IpAddr], ready: bool) -> Result<()> {
        let st = if ready { "True" } else { "False" };
        let all: Vec<Value> = ips.iter().map(|ip| json!({"ip": ip.to_string()})).collect();
        self.patch_status(
            "pod",
            Some(ns),
            name,
            &json!({"status": {
                "phase": "Running",
                "podIP": ips.first().map(IpAddr::to_string),
                "podIPs": all,
                "conditions": [{"type": "Ready", "status": st},
                               {"type": "ContainersReady", "status": st}],
            }}),
        )
    }

    /// A token of ServiceAccount `ns/sa` (TokenRequest API, one hour).
    pub fn token(&self, ns: &str, sa: &str) -> Result<String> {
        Ok(self
            .kubectl(&["create", "token", sa, "-n", ns, "--duration=1h"])?
            .trim()
            .to_string())
    }

    /// Writes a kubeconfig authenticating with `token` to `path`.
    pub fn write_kubeconfig(&self, path: &Path, token: &str, namespace: &str) -> Result<()> {
        write(
            path,
            &kubeconfig_text(&self.server(), &self.ca(), token, namespace),
        )
    }

    /// Starts kube-proxy (iptables mode) in host `role`'s namespace as node
    /// `node` (registered first with the host's address).
    pub fn start_proxy(&self, topo: &Topology, role: &str, node: &str) -> Result<Proc> {
        let host = topo.host(role)?;
        self.add_node(node, host.addr)?;
        let cfg = self.dir.join(format!("proxy-{node}.yaml"));
        write(
            &cfg,
            &format!(
                "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n\
                 clientConnection:\n  kubeconfig: {}\nhostnameOverride: {node}\nmode: iptables\n\
                 bindAddress: {addr}\nhealthzBindAddress: 127.0.0.1:10256\nmetricsBindAddress: 127.0.0.1:10249\n\
                 conntrack:\n  maxPerCore: 0\n  min: 0\n",
                self.dir.join("proxy.kubeconfig").display(),
                addr = host.addr
            ),
        )?;
        let kube_s = self.kube.display().to_string();
        let proc = topo.spawn(
            &host.ns,
            &format!("kube-proxy-{node}"),
            &[
                &kube_s,
                "kube-proxy",
                &format!("--config={}", cfg.display()),
            ],
        )?;
        let ns = host.ns.clone();
        self.wait_until(&format!("kube-proxy on {node}"), &proc, || {
            netns::exec(&ns, &["curl", "-sf", "http://127.0.0.1:10256/healthz"])
                .is_ok_and(|o| o.status.success())
        })?;
        Ok(proc)
    }

    /// Compacts etcd at its current revision (through etcd's gRPC gateway),
    /// so a watch resuming from any older resourceVersion gets 410 Gone.
    /// Returns the revision compacted at.
    pub fn compact_etcd(&self) -> Result<u64> {
        let curl = |path: &str, body: &str| -> Result<Value> {
            let out = netns::exec_ok(
                &self.ns,
                &[
                    "curl",
                    "-sf",
                    "-X",
                    "POST",
                    "-d",
                    body,
                    &format!("http://127.0.0.1:2379{path}"),
                ],
            )?;
            serde_json::from_str(&out).map_err(|e| KubeError::BadJson {
                args: format!("(etcd) {path}"),
                error: e.to_string(),
            })
        };
        // A range read of one key returns the store's current revision.
        let r = curl("/v3/kv/range", r#"{"key":"AA=="}"#)?;
        let rev: u64 = r["header"]["revision"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        curl(
            "/v3/kv/compaction",
            &format!(r#"{{"revision":"{rev}","physical":true}}"#),
        )?;
        Ok(rev)
    }

    /// The etcd binary (for tools such as `etcdctl`-less checks).
    pub fn etcd_binary(&self) -> &Path {
        &self.etcd
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_from_the_go_modules() {
        assert!(K8S_VERSION.starts_with("v1."), "{K8S_VERSION}");
        assert!(ETCD_VERSION.starts_with("v3.6."), "{ETCD_VERSION}");
        assert!(bin_dir()
            .display()
            .to_string()
            .ends_with(&format!("kube-{K8S_VERSION}-etcd-{ETCD_VERSION}")));
    }

    #[test]
    fn kubeconfig_names_server_ca_and_token() {
        let k = kubeconfig_text(
            "https://198.18.0.250:6443",
            Path::new("/x/ca.crt"),
            "tok",
            "ns1",
        );
        assert!(k.contains("server: https://198.18.0.250:6443"));
        assert!(k.contains("certificate-authority: /x/ca.crt"));
        assert!(k.contains("token: tok"));
        assert!(k.contains("namespace: ns1"));
    }
}
