//! Sets `PODLB_RUSTC`, the compiler's version, for the `podlb_build_info`
//! metric. (Cargo reruns a build script when the compiler changes.)

fn main() {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let version = std::process::Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.split_whitespace().nth(1).map(str::to_string))
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=PODLB_RUSTC={version}");
    println!("cargo:rerun-if-changed=build.rs");
}
