//! `podlb-lab up`, `down`, `sweep` and `config`: the lab as a process, for
//! the Python benches (bench/nslab.py) and for people at a shell.
//!
//! `up` builds a lab ([`topo::build`]), prints its description, and owns it:
//! it removes everything (processes left in the namespaces included) when
//! its standard input closes, or on SIGTERM, SIGINT or SIGHUP. A client that
//! keeps the write end of a pipe to `up`'s stdin thus cannot leave a lab
//! behind, even if it is killed: the kernel closes the pipe.

use std::io::{Read, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use podlb_lab::demo::ConfigSpec;
use podlb_lab::netns;
use podlb_lab::topo::{self, LabSpec};

/// How long `down` waits for a lab's owner to remove it.
const DOWN_TIMEOUT: Duration = Duration::from_secs(60);

fn fail(what: &str, e: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("podlb-lab {what}: {e}");
    ExitCode::from(1)
}

/// `podlb-lab up SPEC [--json] [--no-stdin]`.
pub fn up(spec: &str, json: bool, watch_stdin: bool) -> ExitCode {
    if let Some(why) = netns::netns_unavailable() {
        return fail("up", &format!("cannot create network namespaces: {why}"));
    }
    let spec = match LabSpec::load(spec) {
        Ok(s) => s,
        Err(e) => return fail("up", &e),
    };
    // Registered before building, so a signal during the build is seen
    // right after it and the lab removed.
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
    ] {
        if let Err(e) = signal_hook::flag::register(sig, stop.clone()) {
            return fail("up", &format!("cannot handle signal {sig}: {e}"));
        }
    }
    let topo = match topo::build(&spec) {
        Ok(t) => t,
        Err(e) => return fail("up", &e),
    };
    let info = match topo::describe(&topo, &spec) {
        Ok(i) => i,
        Err(e) => return fail("up", &e),
    };
    if let Err(e) = announce(&info, json, watch_stdin) {
        return fail("up", &e);
    }
    if watch_stdin {
        let stop = stop.clone();
        std::thread::spawn(move || {
            // Whatever arrives is ignored: only the end of input matters.
            let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
            stop.store(true, Ordering::SeqCst);
        });
    }
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(topo);
    eprintln!("podlb-lab: lab {} removed", info.id);
    ExitCode::SUCCESS
}

fn announce(info: &topo::LabInfo, json: bool, watch_stdin: bool) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        let line = serde_json::to_string(info).map_err(std::io::Error::other)?;
        writeln!(out, "{line}")?;
    } else {
        writeln!(out, "lab {} (directory {})", info.id, info.dir.display())?;
        writeln!(out, "  node {:<24} bridge {}", info.node, info.bridge)?;
        for (role, h) in &info.hosts {
            writeln!(
                out,
                "  {role:<8} {:<24} {}/{} {} port {}",
                h.ns, h.addr, h.prefix_len, h.mac, h.port
            )?;
        }
        let end = if watch_stdin {
            "end of input (Ctrl-D), Ctrl-C"
        } else {
            "Ctrl-C"
        };
        writeln!(
            out,
            "{end} or `podlb-lab down {}` removes it; `ip netns exec <ns> <cmd>` runs in it",
            info.id
        )?;
    }
    out.flush()
}

/// `podlb-lab down ID...`.
pub fn down(ids: &[String]) -> ExitCode {
    let mut rc = ExitCode::SUCCESS;
    for id in ids {
        match topo::remove(id, DOWN_TIMEOUT) {
            Ok(left) if left.is_empty() => eprintln!("podlb-lab: lab {id} is down"),
            Ok(left) => eprintln!(
                "podlb-lab: lab {id} is down (removed what its owner left: {})",
                left.join(" ")
            ),
            Err(e) => rc = fail("down", &e),
        }
    }
    rc
}

/// `podlb-lab sweep`: removes `plb-<pid>-*` namespaces, and the labs'
/// temporary directories, whose pid is dead.
pub fn sweep() -> ExitCode {
    if let Some(why) = netns::netns_unavailable() {
        return fail("sweep", &why);
    }
    let removed = netns::sweep_stale();
    for n in &removed {
        println!("{n}");
    }
    let dirs = topo::sweep_dirs();
    for d in &dirs {
        println!("{}", d.display());
    }
    eprintln!(
        "podlb-lab: removed {} stale namespace(s) and {} directory(ies) of dead processes",
        removed.len(),
        dirs.len()
    );
    ExitCode::SUCCESS
}

/// `podlb-lab config SPEC`: the podlb config of a JSON [`ConfigSpec`] (a
/// path, or "-" for standard input) as TOML on standard output, checked by
/// podlb's own parser first.
pub fn config(path: &str) -> ExitCode {
    let mut text = String::new();
    let read = if path == "-" {
        std::io::stdin().read_to_string(&mut text).map(drop)
    } else {
        std::fs::read_to_string(path).map(|t| text = t)
    };
    if let Err(e) = read {
        return fail("config", &format!("reading {path}: {e}"));
    }
    let spec: ConfigSpec = match serde_json::from_str(&text) {
        Ok(s) => s,
        Err(e) => return fail("config", &format!("{path}: {e}")),
    };
    let toml = spec.to_toml();
    if let Err(e) = podlb::config::Config::parse(&toml) {
        return fail("config", &format!("podlb rejects the config: {e}\n{toml}"));
    }
    print!("{toml}");
    ExitCode::SUCCESS
}
