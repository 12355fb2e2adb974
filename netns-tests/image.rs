//! The container image (issue 15 item 5): deploy/image/build.sh builds it
//! with buildah from scratch plus this build's podlb binary and the
//! libraries it links, then runs it once with podman (`podlb --version`,
//! `podlb check` on deploy/kubernetes' ConfigMap config). Container storage
//! is a directory of this test's own (vfs driver), removed afterwards.
//! Needs root (podman run) and buildah, podman and runc (deps.sh); without
//! them this test fails rather than skips.

use std::process::Command;

use crate::common::*;

/// Removes the container storage, whatever happens.
struct Store(std::path::PathBuf);

impl Drop for Store {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn image_builds_from_scratch_and_runs() {
    require_netns!("image_builds_from_scratch_and_runs");
    let store = Store(std::env::temp_dir().join(format!("podlb-image-{}", std::process::id())));
    let script = test_file("../deploy/image/build.sh");
    let out = Command::new(&script)
        .arg("--run")
        .env("PODLB_BIN", podlb_exe())
        .env("PODLB_IMAGE", "localhost/podlb:netns-test")
        .env("PODLB_IMAGE_ROOT", &store.0)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        out.status.success(),
        "build.sh --run failed ({}); buildah/podman/runc missing? run netns-tests/deps.sh\n{stdout}{stderr}",
        out.status
    );
    // The libraries ldd names went in, the loader included.
    assert!(stdout.contains("ld-linux"), "{stdout}");
    assert!(
        stdout.contains(&format!("podlb {}", env!("CARGO_PKG_VERSION"))),
        "no version line from the container:\n{stdout}"
    );
    assert!(
        stdout.contains("/etc/podlb/podlb.toml: ok"),
        "podlb check in the container:\n{stdout}"
    );
    assert!(stdout.contains("build.sh: OK"), "{stdout}");
}
