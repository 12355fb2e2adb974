//! The `podlb` binary: run, check, status, demo.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use podlb::config::{Config, DEFAULT_ADMIN};
use podlb::http::client::get_once;
use podlb::http::StatusCode;
use podlb::status::StatusReport;
use podlb::{engine, logfmt};

/// podlb: a portable userspace L4 load balancer for container clusters.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Attach to the network and balance (SIGHUP reloads, SIGTERM stops).
    Run {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Validate a config file; exit 1 with the offending key on error.
    Check {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Print the status of a running podlb (its admin endpoint).
    Status {
        #[arg(long, default_value = DEFAULT_ADMIN)]
        admin: SocketAddr,
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
    },
    /// Build a network-namespace lab (client, podlb, three backends), send
    /// HTTP through the VIP, show how it spread, remove everything. Root.
    Demo {
        #[arg(long, default_value_t = 300)]
        connections: usize,
        /// nat or dsr
        #[arg(long, default_value = "nat")]
        mode: String,
        /// af_packet or tap
        #[arg(long, default_value = "af_packet")]
        attach: String,
    },
}

fn main() -> ExitCode {
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PODLB_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr);
    let format = std::env::var(logfmt::FORMAT_ENV).ok();
    match logfmt::LogFormat::from_env_value(format.as_deref()) {
        logfmt::LogFormat::Json => logs.event_format(logfmt::JsonFormat).init(),
        logfmt::LogFormat::Text => logs.init(),
    }
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Run { config } => match engine::run(&config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("podlb: {e}");
                ExitCode::from(1)
            }
        },
        Cmd::Check { config } => match Config::load(&config) {
            Ok(c) => {
                println!(
                    "{}: ok ({} services, {} backends)",
                    config.display(),
                    c.services.len(),
                    c.services.iter().map(|s| s.backends.len()).sum::<usize>()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: {e}", config.display());
                ExitCode::from(1)
            }
        },
        Cmd::Status { admin, json } => match fetch(admin, "/status") {
            Ok(body) => {
                if json {
                    println!("{body}");
                } else {
                    print_status(&body);
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("podlb status: cannot read http://{admin}/status: {e}");
                ExitCode::from(1)
            }
        },
        Cmd::Demo {
            connections,
            mode,
            attach,
        } => demo(connections, &mode, &attach),
    }
}

/// `podlb demo` runs the lab's demo: the lab (namespaces, backends, load) is
/// a dev crate, not part of the product, so its binary `podlb-lab` sits
/// beside this one in a source build (`cargo build --release` builds both)
/// and is absent from the image. Like git's subcommands, this execs it.
fn demo(connections: usize, mode: &str, attach: &str) -> ExitCode {
    use std::os::unix::process::CommandExt;
    let lab = std::env::current_exe()
        .ok()
        .map(|p| p.with_file_name("podlb-lab"))
        .filter(|p| p.is_file());
    let Some(lab) = lab else {
        eprintln!(
            "podlb demo: the demo lives in the podlb-lab binary, which is not beside this one; \
             build it from the source tree with `cargo build --release`"
        );
        return ExitCode::from(1);
    };
    let err = std::process::Command::new(&lab)
        .args(["demo", "--connections", &connections.to_string()])
        .args(["--mode", mode, "--attach", attach])
        .exec();
    eprintln!("podlb demo: cannot run {}: {err}", lab.display());
    ExitCode::from(1)
}

/// `GET path` on the admin endpoint: the body of a 200, else the status.
fn fetch(addr: SocketAddr, path: &str) -> Result<String, String> {
    let r = get_once(addr, path, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    if r.status != StatusCode::OK {
        return Err(format!("{:?} {}", r.version, r.status));
    }
    Ok(r.text())
}

fn print_status(body: &str) {
    match serde_json::from_str::<StatusReport>(body) {
        Ok(st) => print!("{}", st.summary()),
        Err(_) => println!("{body}"),
    }
}
