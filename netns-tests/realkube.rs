//! Against the real Kubernetes control plane (issue 14): etcd,
//! kube-apiserver, kube-controller-manager and kube-proxy built from the
//! upstream modules (netns-tests/kube/), in lab namespaces.

use std::net::Ipv4Addr;

use serde_json::json;

use podlb_lab::kube::{self, KubeCluster};
use podlb_lab::netns::Topology;

use crate::common::*;

/// The control plane's host on the lab LAN.
pub const KCTL: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 250);

/// Skips (passing, with the reason) when the binaries are not built.
macro_rules! require_kube {
    ($name:expr) => {
        require_netns!($name);
        if !podlb_lab::kube::available() {
            // CI builds them first (netns-tests/deps.sh): missing there is a failure.
            assert!(
                std::env::var_os("CI").is_none(),
                "the Kubernetes binaries are missing in CI: {}",
                podlb_lab::kube::bin_dir().display()
            );
            eprintln!(
                "SKIP {}: the Kubernetes binaries are not in {} (netns-tests/deps.sh builds them)",
                $name,
                podlb_lab::kube::bin_dir().display()
            );
            return;
        }
    };
}

#[test]
fn kube_control_plane_derives_slices_and_enforces_rbac() {
    require_kube!("kube_control_plane_derives_slices_and_enforces_rbac");
    let mut topo = Topology::new().unwrap();
    topo.add_host("kctl", KCTL).unwrap();
    let k = KubeCluster::start(&topo, "kctl").unwrap();
    eprintln!(
        "control plane {} up ({} / etcd {})",
        k.server(),
        kube::K8S_VERSION,
        kube::ETCD_VERSION
    );

    // podlb's RBAC, applied from the manifests as a user would.
    let deploy = test_file("../deploy/kubernetes");
    k.kubectl(&[
        "apply",
        "-f",
        &deploy.join("namespace.yaml").display().to_string(),
    ])
    .unwrap();
    k.kubectl(&[
        "apply",
        "-f",
        &deploy.join("rbac.yaml").display().to_string(),
    ])
    .unwrap();
    let token = k.token("podlb-system", "podlb").unwrap();
    let kc = k.dir().join("podlb.kubeconfig");
    k.write_kubeconfig(&kc, &token, "podlb-system").unwrap();
    assert!(k.kubectl_as(&kc, &["get", "services", "-A"]).is_ok());
    let denied = k
        .kubectl_as(&kc, &["get", "secrets", "-A"])
        .unwrap_err()
        .to_string();
    assert!(denied.contains("forbidden"), "{denied}");

    // Pods through the API, their status set as a kubelet would; the real
    // EndpointSlice controller derives the slice.
    k.add_node("node-be", Ipv4Addr::new(198, 18, 0, 21))
        .unwrap();
    k.apply(&json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]},
    }))
    .unwrap();
    for (i, ip) in [
        (1, Ipv4Addr::new(198, 18, 0, 21)),
        (2, Ipv4Addr::new(198, 18, 0, 22)),
    ] {
        let name = format!("web-{i}");
        k.add_pod("default", &name, &json!({"app": "web"}), "node-be")
            .unwrap();
        k.set_pod("default", &name, ip, i == 1).unwrap();
    }
    let budget = Budget::start();
    let slice = crate::kubernetes::wait_for(
        &budget,
        std::time::Duration::from_secs(20),
        "the slice",
        || {
            let v = k
                .get_json(&[
                    "endpointslices",
                    "-n",
                    "default",
                    "-l",
                    "kubernetes.io/service-name=web",
                ])
                .ok()?;
            let eps = v["items"][0]["endpoints"].as_array()?.clone();
            (eps.len() == 2).then_some(eps)
        },
    );
    let ready: Vec<bool> = slice
        .iter()
        .map(|e| e["conditions"]["ready"].as_bool().unwrap_or(false))
        .collect();
    assert_eq!(ready.iter().filter(|r| **r).count(), 1, "{slice:?}");
}
