//! The Kubernetes manifests in deploy/kubernetes: rendered and cross-checked
//! by validate_deploy.py (references, selectors, RBAC against the verbs
//! podlb uses, probes, podlb.toml). Needs no root and no namespaces, only
//! python3 with PyYAML (deps.sh installs it); without them this test fails
//! rather than skips. The schemas are checked by a real kube-apiserver:
//! `realkube_deploy_manifests_apply_server_side` (realkube.rs).

use std::process::Command;

use crate::common::*;

#[test]
fn deploy_manifests_validate() {
    let script = test_file("validate_deploy.py");
    let out = match Command::new("python3")
        .arg(&script)
        // Also run `podlb check` on the ConfigMap's podlb.toml with this
        // build's binary (the whole file, [kubernetes] included, unless
        // PODLB_CHECK_K8S_CONFIG=0).
        .env("PODLB_BIN", podlb_exe())
        .output()
    {
        Ok(out) => out,
        Err(e) => panic!(
            "cannot run python3 {}: {e}; install python3 and PyYAML with netns-tests/deps.sh",
            script.display()
        ),
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        out.status.success(),
        "validate_deploy.py failed ({}); PyYAML missing? run netns-tests/deps.sh\n{stdout}{stderr}",
        out.status
    );
    assert!(
        stdout.contains("validate_deploy: OK"),
        "no OK line:\n{stdout}"
    );
}
