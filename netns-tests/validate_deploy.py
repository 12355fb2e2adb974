#!/usr/bin/env python3
"""Checks deploy/kubernetes without a cluster.

1. Renders each kustomization (the base and deploy/overlays/tap) the way
   `kubectl kustomize` does for the fields we use: `resources` (files and
   directories with their own kustomization), `namespace`, and `patches`
   holding JSON6902 operations. Anything else in a kustomization is an error
   here, so a field this renderer does not implement is never ignored.
2. (The schema check is no longer here: the `realkube_deploy_manifests_
   apply_server_side` test renders every kustomization with kubectl's own
   kustomize and applies it, server side with strict field validation, to a
   real kube-apiserver; see docs/kubernetes.md, "What is tested".)
3. Cross-checks what an API server does not see: references (ServiceAccount,
   ConfigMap, Role), selectors against Pod labels, the RBAC rules against
   exactly the verbs podlb uses, the security context, probes against the
   admin address, the grace period against vrrp.drain_ms, and podlb.toml
   itself (TOML syntax, the [kubernetes] keys and values).
4. With a podlb binary ($PODLB_BIN, else target/release/podlb), runs
   `podlb check` on each podlb.toml with its [kubernetes] tables removed,
   and on the whole file (unless PODLB_CHECK_K8S_CONFIG=0).

Exits 0 when everything holds, 1 with one line per problem otherwise, 2 when
a dependency is missing (netns-tests/deps.sh installs them).
"""

import copy
import ipaddress
import os
import subprocess
import sys
import tempfile
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python < 3.11
    sys.exit("validate_deploy.py needs Python 3.11 or later (tomllib)")
try:
    import yaml
except ImportError as e:
    print(
        f"validate_deploy.py: missing Python module: {e.name}; "
        "install it with netns-tests/deps.sh (PyYAML)",
        file=sys.stderr,
    )
    sys.exit(2)

ROOT = Path(__file__).resolve().parent.parent
BASE = ROOT / "deploy" / "kubernetes"
OVERLAYS = {"tap": ROOT / "deploy" / "overlays" / "tap"}
EXAMPLE = BASE / "example-service.yaml"

NAMESPACE = "podlb-system"
SERVICE_ACCOUNT = "podlb"
DEPLOYMENT = "podlb"
CONFIG_MAP = "podlb-config"
CONFIG_KEY = "podlb.toml"
CAPABILITIES = {"NET_RAW", "NET_ADMIN"}

# Exactly the API access podlb uses: (scope, apiGroup, resource, verb), scope
# "cluster" for a ClusterRole bound by a ClusterRoleBinding, or the
# namespace of a Role. Keep in step with docs/kubernetes.md, "RBAC".
EXPECTED_RBAC = (
    {("cluster", "", "services", v) for v in ("list", "watch")}
    | {("cluster", "", "services/status", v) for v in ("patch",)}
    | {("cluster", "discovery.k8s.io", "endpointslices", v) for v in ("list", "watch")}
    | {("cluster", "", "nodes", v) for v in ("list", "watch")}
    | {("cluster", "", "events", v) for v in ("create",)}
    | {("cluster", "podlb.io", "vippools", v) for v in ("list", "watch")}
    | {(NAMESPACE, "coordination.k8s.io", "leases", v) for v in ("get", "create", "update")}
)

# The [kubernetes] contract: key -> allowed TOML types.
K8S_KEYS = {
    "kubeconfig": str,
    "load_balancer_class": str,
    "vip_pools": list,
    "default_mode": str,
    "namespace": str,
    "peers_service": str,
    "pod_ip": str,
    "election": str,
    "lease": dict,
    "health_check": dict,
    "vip_pool_crd": bool,
}
K8S_REQUIRED = {"load_balancer_class", "vip_pools"}
LEASE_KEYS = {"name": str, "duration_ms": int, "retry_ms": int}
HEALTH_KEYS = {"kind": str, "interval_ms": int, "timeout_ms": int, "rise": int, "fall": int}

# Kinds that are not namespaced (among those we use or could plausibly use).
CLUSTER_KINDS = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "PriorityClass",
    "StorageClass",
    "IngressClass",
    "PersistentVolume",
    "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration",
}
KUSTOMIZATION_FIELDS = {"apiVersion", "kind", "resources", "namespace", "patches"}

errors = []


def fail(where, msg):
    errors.append(f"{where}: {msg}")


class RenderError(Exception):
    pass


# ---- rendering ---------------------------------------------------------------


def load_docs(path):
    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d is not None]
    for d in docs:
        if not isinstance(d, dict) or "kind" not in d or "apiVersion" not in d:
            raise RenderError(f"{path}: a document without kind/apiVersion")
    return docs


def rid(doc):
    md = doc.get("metadata", {})
    return (doc["kind"], md.get("namespace", ""), md.get("name", ""))


def show(doc):
    kind, ns, name = rid(doc)
    return f"{kind} {ns + '/' if ns else ''}{name}"


def pointer_tokens(ptr):
    if ptr == "":
        return []
    if not ptr.startswith("/"):
        raise RenderError(f"JSON pointer {ptr!r} must start with '/'")
    return [t.replace("~1", "/").replace("~0", "~") for t in ptr[1:].split("/")]


def walk(doc, tokens, ptr):
    """The container holding the last token."""
    cur = doc
    for t in tokens[:-1]:
        if isinstance(cur, list):
            try:
                cur = cur[int(t)]
            except (ValueError, IndexError):
                raise RenderError(f"{ptr}: no list element {t!r}")
        elif isinstance(cur, dict):
            if t not in cur:
                raise RenderError(f"{ptr}: no key {t!r}")
            cur = cur[t]
        else:
            raise RenderError(f"{ptr}: {t!r} is inside a scalar")
    return cur


def list_index(container, token, ptr, allow_end):
    if token == "-" and allow_end:
        return len(container)
    try:
        i = int(token)
    except ValueError:
        raise RenderError(f"{ptr}: {token!r} is not a list index")
    if not 0 <= i < len(container) + (1 if allow_end else 0):
        raise RenderError(f"{ptr}: index {i} out of range")
    return i


def apply_json6902(doc, ops, where):
    """RFC 6902 add, remove, replace and test (move and copy are not used)."""
    for n, op in enumerate(ops):
        w = f"{where} op {n}"
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise RenderError(f"{w}: not a JSON6902 operation")
        kind, ptr = op["op"], op["path"]
        tokens = pointer_tokens(ptr)
        if not tokens:
            raise RenderError(f"{w}: the whole-document pointer is not supported")
        parent = walk(doc, tokens, ptr)
        last = tokens[-1]
        if kind == "add":
            if isinstance(parent, list):
                parent.insert(list_index(parent, last, ptr, True), copy.deepcopy(op["value"]))
            elif isinstance(parent, dict):
                parent[last] = copy.deepcopy(op["value"])
            else:
                raise RenderError(f"{w}: {ptr}: parent is a scalar")
        elif kind in ("remove", "replace", "test"):
            if isinstance(parent, list):
                i = list_index(parent, last, ptr, False)
            elif isinstance(parent, dict):
                if last not in parent:
                    raise RenderError(f"{w}: {ptr} does not exist")
                i = last
            else:
                raise RenderError(f"{w}: {ptr}: parent is a scalar")
            if kind == "remove":
                del parent[i]
            elif kind == "replace":
                parent[i] = copy.deepcopy(op["value"])
            elif parent[i] != op["value"]:
                raise RenderError(f"{w}: test failed: {ptr} is {parent[i]!r}, not {op['value']!r}")
        else:
            raise RenderError(f"{w}: op {kind!r} is not implemented by this renderer")


def target_matches(doc, target):
    api = doc["apiVersion"]
    group, version = api.split("/", 1) if "/" in api else ("", api)
    md = doc.get("metadata", {})
    checks = {
        "group": group,
        "version": version,
        "kind": doc["kind"],
        "name": md.get("name", ""),
        "namespace": md.get("namespace", ""),
    }
    for k, v in target.items():
        if k not in checks:
            raise RenderError(f"patch target field {k!r} is not implemented by this renderer")
        if checks[k] != v:
            return False
    return True


def render(directory, seen=()):
    """The resources of the kustomization in `directory`, transformed."""
    directory = directory.resolve()
    if directory in seen:
        raise RenderError(f"{directory}: kustomization cycle")
    kfile = directory / "kustomization.yaml"
    if not kfile.exists():
        raise RenderError(f"{directory}: no kustomization.yaml")
    with open(kfile) as f:
        k = yaml.safe_load(f) or {}
    unknown = set(k) - KUSTOMIZATION_FIELDS
    if unknown:
        raise RenderError(
            f"{kfile}: fields {sorted(unknown)} are not implemented by this renderer; "
            "extend netns-tests/validate_deploy.py with them"
        )
    if k.get("kind", "Kustomization") != "Kustomization":
        raise RenderError(f"{kfile}: kind must be Kustomization")

    docs = []
    for entry in k.get("resources", []):
        p = directory / entry
        if p.is_dir():
            docs += render(p, seen + (directory,))
        elif p.is_file():
            docs += load_docs(p)
        else:
            raise RenderError(f"{kfile}: resource {entry!r} does not exist")

    for n, patch in enumerate(k.get("patches", [])):
        where = f"{kfile} patches[{n}]"
        if "path" in patch:
            with open(directory / patch["path"]) as f:
                ops = yaml.safe_load(f)
            where += f" ({patch['path']})"
        elif "patch" in patch:
            ops = yaml.safe_load(patch["patch"])
        else:
            raise RenderError(f"{where}: needs `path` or `patch`")
        if not isinstance(ops, list):
            raise RenderError(
                f"{where}: strategic-merge patches are not implemented by this renderer; "
                "write a JSON6902 operation list"
            )
        target = patch.get("target")
        if not target:
            raise RenderError(f"{where}: a JSON6902 patch needs a target")
        hits = [d for d in docs if target_matches(d, target)]
        if not hits:
            raise RenderError(f"{where}: target {target} matches no resource")
        for d in hits:
            apply_json6902(d, ops, where)

    ns = k.get("namespace")
    if ns:
        for d in docs:
            if d["kind"] not in CLUSTER_KINDS:
                d.setdefault("metadata", {})["namespace"] = ns

    ids = {}
    for d in docs:
        if rid(d) in ids:
            raise RenderError(f"{kfile}: {show(d)} is defined twice")
        ids[rid(d)] = d
    return docs


# ---- cross-checks ------------------------------------------------------------------


def find(docs, kind, name, namespace=None):
    for d in docs:
        md = d.get("metadata", {})
        if d["kind"] == kind and md.get("name") == name and (
            namespace is None or md.get("namespace", "") == namespace
        ):
            return d
    return None


def selects(selector, labels):
    """A label selector (matchLabels/matchExpressions) against labels."""
    if not selector:
        return False
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in selector.get("matchExpressions") or []:
        op, key, vals = e["operator"], e["key"], e.get("values") or []
        if op == "In" and labels.get(key) not in vals:
            return False
        if op == "NotIn" and labels.get(key) in vals:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def pod_spec(doc):
    if doc["kind"] == "Pod":
        return doc.get("spec", {})
    if doc["kind"] == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    if doc["kind"] in ("Deployment", "DaemonSet", "StatefulSet", "ReplicaSet", "Job"):
        return doc["spec"]["template"]["spec"]
    return None


def all_containers(spec):
    return (
        spec.get("initContainers", [])
        + spec.get("containers", [])
        + spec.get("ephemeralContainers", [])
    )


def resolve_port(container, port):
    if isinstance(port, int):
        return port
    for p in container.get("ports", []):
        if p.get("name") == port:
            return p["containerPort"]
    return None


def check_config(text, where, docs, variant):
    """podlb.toml: syntax, the [kubernetes] contract, and agreement with the manifests."""
    try:
        cfg = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        fail(where, f"{CONFIG_KEY} is not valid TOML: {e}")
        return None
    if ("interface" in cfg) == ("tap" in cfg):
        fail(where, "set exactly one of `interface` (AF_PACKET) and [tap]")
    if variant == "base" and cfg.get("interface") != "eth0":
        fail(where, "the base attaches with AF_PACKET to the Pod's eth0")
    if variant == "tap" and not isinstance(cfg.get("tap"), dict):
        fail(where, "the TAP overlay needs a [tap] table")
    def listen(key, default):
        a = cfg.get(key, default)
        if a is None:
            return None
        try:
            host, port = a.rsplit(":", 1)
            return (ipaddress.ip_address(host.strip("[]")), int(port))
        except ValueError:
            fail(where, f"{key} = {a!r} is not an address:port")
            return None

    cfg["_admin"] = listen("admin", "127.0.0.1:9100")
    public = listen("admin_public", None)
    # The probes ask admin_public when there is one (it serves probes and
    # /metrics only), else admin.
    cfg["_probes"] = public if "admin_public" in cfg else cfg["_admin"]
    if public is not None and cfg["_admin"] is not None and not cfg["_admin"][0].is_loopback:
        fail(where, "with admin_public, keep admin on the loopback: it serves /status and /flows")
    if cfg.get("admin_public_reports"):
        fail(where, "admin_public_reports serves /status and /flows (client addresses) on the Pod IP")

    k = cfg.get("kubernetes")
    if not isinstance(k, dict):
        fail(where, "no [kubernetes] table")
        return cfg
    for key, value in k.items():
        if key not in K8S_KEYS:
            fail(where, f"kubernetes.{key} is not a key of the [kubernetes] contract")
        elif not isinstance(value, K8S_KEYS[key]):
            fail(where, f"kubernetes.{key} must be a {K8S_KEYS[key].__name__}")
    for key in K8S_REQUIRED - set(k):
        fail(where, f"kubernetes.{key} is missing")
    pools = []
    for i, p in enumerate(k.get("vip_pools", [])):
        try:
            pools.append(ipaddress.IPv4Network(p, strict=True))
        except ValueError as e:
            fail(where, f"kubernetes.vip_pools[{i}] = {p!r}: {e}")
    for i, a in enumerate(pools):
        for b in pools[i + 1 :]:
            if a.overlaps(b):
                fail(where, f"kubernetes.vip_pools: {a} overlaps {b}")
    if not pools:
        fail(where, "kubernetes.vip_pools is empty: no Service could get a VIP")
    cfg["_pools"] = pools
    if k.get("default_mode", "nat") not in ("nat", "dsr", "vxlan"):
        fail(where, "kubernetes.default_mode must be \"nat\", \"dsr\" or \"vxlan\"")
    ns = k.get("namespace", "")
    if ns not in ("", NAMESPACE):
        fail(where, f"kubernetes.namespace = {ns!r}, but podlb is deployed in {NAMESPACE}")
    election = k.get("election", "vrrp")
    if election not in ("vrrp", "lease"):
        fail(where, "kubernetes.election must be \"vrrp\" or \"lease\"")
    if election == "vrrp" and "vrrp" not in cfg:
        fail(where, "election = \"vrrp\" needs a [vrrp] table")
    lease = k.get("lease")
    if election == "lease" and not isinstance(lease, dict):
        fail(where, "election = \"lease\" needs a [kubernetes.lease] table")
    if election != "lease" and lease is not None:
        fail(where, "[kubernetes.lease] is only for election = \"lease\"")
    for name, table, keys in (("lease", lease, LEASE_KEYS), ("health_check", k.get("health_check"), HEALTH_KEYS)):
        if not isinstance(table, dict):
            continue
        for key, value in table.items():
            if key not in keys:
                fail(where, f"kubernetes.{name}.{key} is not a key of the contract")
            elif not isinstance(value, keys[key]) or isinstance(value, bool):
                fail(where, f"kubernetes.{name}.{key} must be a {keys[key].__name__}")
            elif keys[key] is int and value <= 0:
                fail(where, f"kubernetes.{name}.{key} must be positive")
    if isinstance(lease, dict):
        if lease.get("retry_ms", 1000) >= lease.get("duration_ms", 4000):
            fail(where, "kubernetes.lease.retry_ms must be shorter than duration_ms")
    hc = k.get("health_check") or {}
    if hc.get("kind", "tcp") not in ("tcp", "http", "none"):
        fail(where, "kubernetes.health_check.kind must be \"tcp\", \"http\" or \"none\"")
    if hc.get("timeout_ms", 500) > hc.get("interval_ms", 1000):
        fail(where, "kubernetes.health_check.timeout_ms is longer than interval_ms")

    # The manifests must agree with the config.
    peers = k.get("peers_service", "podlb-peers")
    if peers:
        svc = find(docs, "Service", peers, NAMESPACE)
        if svc is None:
            fail(where, f"kubernetes.peers_service = {peers!r}, but there is no such Service in {NAMESPACE}")
        cfg["_peers"] = svc
    lease_name = (lease or {}).get("name", "podlb")
    role_names = set()
    for d in docs:
        if d["kind"] == "Role":
            for r in d.get("rules", []):
                if "leases" in r.get("resources", []) and r.get("resourceNames"):
                    role_names |= set(r["resourceNames"])
    if role_names and role_names != {lease_name}:
        fail(where, f"the Role names Lease {sorted(role_names)}, the config uses {lease_name!r}")
    return cfg


def check_rbac(docs, where):
    granted = set()
    sa = find(docs, "ServiceAccount", SERVICE_ACCOUNT, NAMESPACE)
    if sa is None:
        fail(where, f"no ServiceAccount {NAMESPACE}/{SERVICE_ACCOUNT}")
    for b in docs:
        if b["kind"] not in ("ClusterRoleBinding", "RoleBinding"):
            continue
        bw = f"{where}: {show(b)}"
        subjects = b.get("subjects", [])
        for s in subjects:
            if s.get("kind") != "ServiceAccount":
                fail(bw, f"binds {s.get('kind')} {s.get('name')}: only the podlb ServiceAccount may be bound")
            elif find(docs, "ServiceAccount", s["name"], s.get("namespace", "")) is None:
                fail(bw, f"subject ServiceAccount {s.get('namespace')}/{s['name']} does not exist")
        if not any(s.get("kind") == "ServiceAccount" and s.get("name") == SERVICE_ACCOUNT
                   and s.get("namespace") == NAMESPACE for s in subjects):
            continue
        ref = b["roleRef"]
        if b["kind"] == "ClusterRoleBinding":
            scope = "cluster"
            if ref["kind"] != "ClusterRole":
                fail(bw, "a ClusterRoleBinding must refer to a ClusterRole")
                continue
            role = find(docs, "ClusterRole", ref["name"])
        else:
            scope = b["metadata"]["namespace"]
            if ref["kind"] == "ClusterRole":
                role = find(docs, "ClusterRole", ref["name"])
            else:
                role = find(docs, "Role", ref["name"], scope)
        if role is None:
            fail(bw, f"roleRef {ref['kind']} {ref['name']} does not exist")
            continue
        if role.get("aggregationRule"):
            fail(bw, f"{show(role)}: aggregated roles cannot be checked")
        for n, r in enumerate(role.get("rules", [])):
            rw = f"{where}: {show(role)} rules[{n}]"
            if r.get("nonResourceURLs"):
                fail(rw, "nonResourceURLs are not needed")
            for field in ("apiGroups", "resources", "verbs"):
                if "*" in r.get(field, []):
                    fail(rw, f"wildcard in {field}")
            for g in r.get("apiGroups", []):
                for res in r.get("resources", []):
                    for v in r.get("verbs", []):
                        granted.add((scope, g, res, v))

    def fmt(s):
        return ", ".join(f"{sc}:{g or 'core'}/{r}:{v}" for sc, g, r, v in sorted(s))

    extra = granted - EXPECTED_RBAC
    missing = EXPECTED_RBAC - granted
    if extra:
        fail(where, f"RBAC grants more than podlb uses: {fmt(extra)}")
    if missing:
        fail(where, f"RBAC lacks what podlb uses: {fmt(missing)}")


def check_container_security(spec, c, cw, variant, podlb):
    sc = c.get("securityContext") or {}
    if sc.get("privileged"):
        fail(cw, "privileged: true")
    if not podlb:
        return
    if sc.get("privileged") is not False:
        fail(cw, "say privileged: false explicitly")
    if sc.get("allowPrivilegeEscalation") is not False:
        fail(cw, "allowPrivilegeEscalation must be false")
    if sc.get("readOnlyRootFilesystem") is not True:
        fail(cw, "readOnlyRootFilesystem must be true")
    caps = sc.get("capabilities") or {}
    if caps.get("drop") != ["ALL"]:
        fail(cw, f"capabilities.drop must be [ALL], is {caps.get('drop')}")
    if set(caps.get("add") or []) != CAPABILITIES or len(caps.get("add") or []) != len(CAPABILITIES):
        fail(cw, f"capabilities.add must be exactly {sorted(CAPABILITIES)}, is {caps.get('add')}")
    seccomp = (sc.get("seccompProfile") or (spec.get("securityContext") or {}).get("seccompProfile") or {})
    if seccomp.get("type") != "RuntimeDefault":
        fail(cw, "seccompProfile must be RuntimeDefault (container or Pod)")


def check_deployment(docs, where, cfg, variant):
    dep = find(docs, "Deployment", DEPLOYMENT, NAMESPACE)
    if dep is None:
        fail(where, f"no Deployment {NAMESPACE}/{DEPLOYMENT}")
        return
    dw = f"{where}: {show(dep)}"
    tmpl = dep["spec"]["template"]
    labels = tmpl.get("metadata", {}).get("labels", {})
    spec = tmpl["spec"]
    if not selects(dep["spec"].get("selector"), labels):
        fail(dw, "spec.selector does not match the Pod template labels")
    if dep["spec"].get("replicas") != 2:
        fail(dw, "replicas must be 2 (active-backup)")
    anti = ((spec.get("affinity") or {}).get("podAntiAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution", []
    )
    if not any(t.get("topologyKey") == "kubernetes.io/hostname" and selects(t.get("labelSelector"), labels)
               for t in anti):
        fail(dw, "needs a required podAntiAffinity on kubernetes.io/hostname selecting its own Pods")

    sa = spec.get("serviceAccountName")
    if sa != SERVICE_ACCOUNT or find(docs, "ServiceAccount", sa, NAMESPACE) is None:
        fail(dw, f"serviceAccountName {sa!r}: no such ServiceAccount in {NAMESPACE} (want {SERVICE_ACCOUNT})")
    if spec.get("automountServiceAccountToken") is False:
        fail(dw, "podlb needs its service account token")
    for flag in ("hostPID", "hostIPC"):
        if spec.get(flag):
            fail(dw, f"{flag} is not needed")
    host_net = bool(spec.get("hostNetwork"))
    if host_net != (variant == "tap"):
        fail(dw, f"hostNetwork must be {'true' if variant == 'tap' else 'false'} in the {variant} variant")

    pdbs = [d for d in docs if d["kind"] == "PodDisruptionBudget"
            and selects(d["spec"].get("selector"), labels)]
    if len(pdbs) != 1:
        fail(dw, "needs one PodDisruptionBudget selecting its Pods")
    elif pdbs[0]["spec"].get("maxUnavailable") != 1:
        fail(dw, f"{show(pdbs[0])}: maxUnavailable must be 1 (one replica keeps the VIPs)")

    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for name, v in volumes.items():
        if "configMap" in v and find(docs, "ConfigMap", v["configMap"]["name"], NAMESPACE) is None:
            fail(dw, f"volume {name}: ConfigMap {v['configMap']['name']} does not exist")
        if "secret" in v or "projected" in v:
            fail(dw, f"volume {name}: podlb mounts no secrets")
        if "hostPath" in v:
            hp = v["hostPath"]
            if variant != "tap" or hp.get("path") != "/dev/net/tun" or hp.get("type") != "CharDevice":
                fail(dw, f"volume {name}: the only host path allowed is /dev/net/tun (CharDevice, TAP overlay)")
    if variant == "tap" and not any(v.get("hostPath", {}).get("path") == "/dev/net/tun" for v in volumes.values()):
        fail(dw, "the TAP overlay needs /dev/net/tun")

    grace = spec.get("terminationGracePeriodSeconds", 30)
    drain = (cfg or {}).get("vrrp", {}).get("drain_ms", 2000)
    if grace * 1000 <= drain:
        fail(dw, f"terminationGracePeriodSeconds {grace} s is not longer than vrrp.drain_ms {drain} ms")

    containers = spec.get("containers", [])
    podlb = [c for c in containers if c["name"] == "podlb"]
    if len(podlb) != 1:
        fail(dw, "needs exactly one container named podlb")
    for c in all_containers(spec):
        check_container_security(spec, c, f"{dw} container {c['name']}", variant, c["name"] == "podlb")
    if not podlb:
        return
    c = podlb[0]
    cw = f"{dw} container podlb"

    env = {e["name"]: e for e in c.get("env", [])}
    for name, field in (("POD_NAMESPACE", "metadata.namespace"), ("POD_NAME", "metadata.name"),
                        ("POD_IP", "status.podIP")):
        got = env.get(name, {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
        if got != field:
            fail(cw, f"env {name} must come from the downward API field {field}")

    args = c.get("args", [])
    if args[:1] != ["run"] or "--config" not in args:
        fail(cw, "args must be `run --config <path>`")
    else:
        path = args[args.index("--config") + 1] if args.index("--config") + 1 < len(args) else ""
        mounted = False
        for m in c.get("volumeMounts", []):
            v = volumes.get(m["name"])
            if v is None:
                fail(cw, f"volumeMount {m['name']}: no such volume")
                continue
            if "configMap" in v and path.startswith(m["mountPath"].rstrip("/") + "/"):
                rel = path[len(m["mountPath"].rstrip("/")) + 1 :]
                items = v["configMap"].get("items")
                keys = {i["path"]: i["key"] for i in items} if items else None
                key = keys.get(rel) if keys is not None else rel
                if key != CONFIG_KEY or v["configMap"]["name"] != CONFIG_MAP:
                    fail(cw, f"--config {path} is not {CONFIG_MAP}/{CONFIG_KEY}")
                mounted = True
        if not mounted:
            fail(cw, f"--config {path} is not inside a mounted ConfigMap")

    admin = (cfg or {}).get("_probes")
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/livez")):
        p = c.get(probe)
        if not p or "httpGet" not in p:
            fail(cw, f"needs an httpGet {probe}")
            continue
        g = p["httpGet"]
        if g.get("path") != path:
            fail(cw, f"{probe} must ask {path}")
        if admin is None:
            continue
        ip, port = admin
        if resolve_port(c, g.get("port")) != port:
            fail(cw, f"{probe} port {g.get('port')} is not the probes' listener's port {port}")
        host = g.get("host")
        if ip.is_loopback:
            if not (host_net and host == "127.0.0.1"):
                fail(cw, f"{probe}: admin listens on {ip}, which the kubelet reaches only with "
                     "hostNetwork and httpGet.host 127.0.0.1")
        elif not ip.is_unspecified and host is None:
            fail(cw, f"{probe}: admin listens on {ip} only, not on the Pod IP the kubelet connects to")

    ports = {(p["containerPort"], p.get("protocol", "TCP")) for p in c.get("ports", [])}
    sync_port = (cfg or {}).get("vrrp", {}).get("sync_port", 8899)
    if admin and (admin[1], "TCP") not in ports:
        fail(cw, f"declare the probes' listener's port {admin[1]}/TCP")
    if (sync_port, "UDP") not in ports:
        fail(cw, f"declare the sync port {sync_port}/UDP")

    res = c.get("resources") or {}
    for k in ("requests", "limits"):
        if "memory" not in (res.get(k) or {}):
            fail(cw, f"set resources.{k}.memory")
    if "cpu" not in (res.get("requests") or {}):
        fail(cw, "set resources.requests.cpu")
    # The flow table is allocated up front; the limit must hold it.
    limit = parse_quantity((res.get("limits") or {}).get("memory", "0"))
    flows = (cfg or {}).get("flows", {}).get("capacity", 1_000_000)
    workers = (cfg or {}).get("workers", 1)
    need = flows * 107 + workers * 8 * 2**20 + 64 * 2**20
    if limit and limit < need:
        fail(cw, f"memory limit {limit} B is below the flow table and rings (~{need} B)")

    peers = (cfg or {}).get("_peers")
    if peers is not None:
        pw = f"{where}: {show(peers)}"
        ps = peers["spec"]
        if ps.get("clusterIP") != "None":
            fail(pw, "must be headless (clusterIP: None)")
        if ps.get("publishNotReadyAddresses") is not False:
            fail(pw, "publishNotReadyAddresses must be false: only ready Pods are peers")
        sel = ps.get("selector") or {}
        if not sel or any(labels.get(k) != v for k, v in sel.items()):
            fail(pw, "selector does not match the podlb Pods")
        for d in docs:
            ds = pod_spec(d)
            if ds is not None and d is not dep and sel and all(
                    ((d["spec"].get("template") or {}).get("metadata", {}).get("labels", {})).get(k) == v
                    for k, v in sel.items()):
                fail(pw, f"selector also matches {show(d)}")
        sp = [p for p in ps.get("ports", []) if p.get("protocol") == "UDP" and p.get("port") == sync_port]
        if not sp:
            fail(pw, f"needs the sync port {sync_port}/UDP")
        elif resolve_port(c, sp[0].get("targetPort", sync_port)) != sync_port:
            fail(pw, f"targetPort does not lead to the container's {sync_port}/UDP")


def parse_quantity(q):
    q = str(q)
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
    for u, m in units.items():
        if q.endswith(u):
            return int(float(q[: -len(u)]) * m)
    return int(float(q))


def check_namespace(docs, where):
    ns = find(docs, "Namespace", NAMESPACE)
    if ns is None:
        fail(where, f"no Namespace {NAMESPACE}")
        return
    level = ns.get("metadata", {}).get("labels", {}).get("pod-security.kubernetes.io/enforce")
    if level in ("baseline", "restricted"):
        fail(where, f"Pod Security level {level} forbids NET_RAW/NET_ADMIN; podlb's Pods would be rejected")
    for d in docs:
        if d["kind"] not in CLUSTER_KINDS and d["metadata"].get("namespace") != NAMESPACE:
            fail(where, f"{show(d)} is not in {NAMESPACE}")


def check_example(docs, cfg):
    where = "example-service.yaml"
    svcs = [d for d in docs if d["kind"] == "Service"]
    deps = [d for d in docs if d["kind"] == "Deployment"]
    if len(svcs) != 1 or len(deps) != 1:
        fail(where, "expects one Deployment and one Service")
        return
    svc, dep = svcs[0], deps[0]
    k = (cfg or {}).get("kubernetes", {})
    spec = svc["spec"]
    if svc["metadata"].get("namespace") != "default" or dep["metadata"].get("namespace") != "default":
        fail(where, "the example lives in namespace default")
    if spec.get("type") != "LoadBalancer":
        fail(where, "the Service must be type LoadBalancer")
    if spec.get("loadBalancerClass") != k.get("load_balancer_class", "podlb.io/vip"):
        fail(where, f"loadBalancerClass {spec.get('loadBalancerClass')!r} is not the configured "
             f"{k.get('load_balancer_class')!r}")
    labels = dep["spec"]["template"]["metadata"].get("labels", {})
    if not selects(dep["spec"]["selector"], labels):
        fail(where, "the web Deployment's selector does not match its Pods")
    if any(labels.get(a) != b for a, b in (spec.get("selector") or {}).items()) or not spec.get("selector"):
        fail(where, "the Service selector does not match the web Pods")
    ann = svc["metadata"].get("annotations") or {}
    if ann.get("podlb.io/mode", "nat") not in ("nat", "dsr", "vxlan"):
        fail(where, "podlb.io/mode must be nat, dsr or vxlan")
    hc = ann.get("podlb.io/health-check")
    if hc is not None and not (hc in ("tcp", "none") or hc.startswith("http:/")):
        fail(where, "podlb.io/health-check must be tcp, http:/path or none")
    for vip in filter(None, (spec.get("loadBalancerIP"), ann.get("podlb.io/vip"))):
        if not any(ipaddress.IPv4Address(vip) in p for p in cfg.get("_pools", [])):
            fail(where, f"VIP {vip} is outside kubernetes.vip_pools")
    c = dep["spec"]["template"]["spec"]["containers"][0]
    for p in spec.get("ports", []):
        if p.get("protocol", "TCP") != "TCP":
            fail(where, f"port {p.get('name')}: podlb forwards TCP only")
        if resolve_port(c, p.get("targetPort", p["port"])) is None:
            fail(where, f"port {p.get('name')}: targetPort {p.get('targetPort')} is not a container port")
    for c in all_containers(dep["spec"]["template"]["spec"]):
        check_container_security({}, c, f"{where} container {c['name']}", "example", False)


# ---- the real binary ---------------------------------------------------------------


def strip_kubernetes(text):
    """The TOML without its [kubernetes] and [kubernetes.*] tables."""
    out, skip = [], False
    for line in text.splitlines(keepends=True):
        s = line.strip()
        if s.startswith("[") and not s.startswith("[["):
            header = s[1:].split("]", 1)[0].strip()
            skip = header == "kubernetes" or header.startswith("kubernetes.")
        elif s.startswith("[["):
            skip = False
        if not skip:
            out.append(line)
    return "".join(out)


def podlb_check(binary, text, where):
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write(text)
        path = f.name
    try:
        r = subprocess.run([str(binary), "check", "--config", path], capture_output=True, text=True, timeout=30)
    finally:
        os.unlink(path)
    if r.returncode != 0:
        fail(where, f"`podlb check` failed ({r.returncode}): {(r.stderr or r.stdout).strip()}")
        return False
    # `podlb check` says "<path>: ok (...)"; anything else is not podlb.
    if ": ok" not in r.stdout:
        fail(where, f"`podlb check` exited 0 without saying ok: {r.stdout.strip()!r}; is {binary} podlb?")
        return False
    return True


def main():
    variants = {"base": BASE, **OVERLAYS}
    rendered = {}
    for name, d in variants.items():
        try:
            rendered[name] = render(d)
        except (RenderError, OSError, yaml.YAMLError, KeyError) as e:
            fail(f"render {name}", str(e))
    try:
        example = load_docs(EXAMPLE)
    except (RenderError, OSError, yaml.YAMLError) as e:
        fail("example-service.yaml", str(e))
        example = []

    configs = {}
    for name, docs in rendered.items():
        where = f"[{name}]"
        cm = find(docs, "ConfigMap", CONFIG_MAP, NAMESPACE)
        text = (cm or {}).get("data", {}).get(CONFIG_KEY)
        cfg = None
        if text is None:
            fail(where, f"no ConfigMap {NAMESPACE}/{CONFIG_MAP} with key {CONFIG_KEY}")
        else:
            cfg = check_config(text, f"{where} {CONFIG_KEY}", docs, name)
            configs[name] = text
        check_namespace(docs, where)
        check_rbac(docs, where)
        check_deployment(docs, where, cfg, name)
        if name == "base":
            check_example(example, cfg or {})
        print(f"validate_deploy: {name}: rendered {len(docs)} resources: "
              + ", ".join(show(d) for d in docs))

    binary = Path(os.environ.get("PODLB_BIN") or ROOT / "target" / "release" / "podlb")
    full = os.environ.get("PODLB_CHECK_K8S_CONFIG", "1") != "0"
    if binary.is_file():
        for name, text in configs.items():
            where = f"[{name}] {binary}"
            if podlb_check(binary, strip_kubernetes(text), where + " (without [kubernetes])"):
                print(f"validate_deploy: {name}: podlb check passed without the [kubernetes] tables")
            if full and podlb_check(binary, text, where):
                print(f"validate_deploy: {name}: podlb check passed on the whole podlb.toml")
        if not full:
            print("validate_deploy: the whole podlb.toml is not given to `podlb check` "
                  "(PODLB_CHECK_K8S_CONFIG=0)")
    else:
        msg = f"validate_deploy: no podlb binary at {binary}; `podlb check` not run"
        if full:
            fail("podlb check", msg + "; build it first (cargo build --release)")
        else:
            print(msg)

    if errors:
        print(f"validate_deploy: FAILED, {len(errors)} problem(s):", file=sys.stderr)
        for e in errors:
            print(f"  {e}", file=sys.stderr)
        return 1
    print("validate_deploy: OK (cross-checks; the schemas are checked by a real "
          "kube-apiserver in the realkube tests)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
