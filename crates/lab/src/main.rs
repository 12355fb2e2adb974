//! `podlb-lab`: the lab's command line. `podlb demo` execs `podlb-lab demo`.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use podlb_lab::demo;

/// podlb's development lab (network namespaces, backends, load).
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
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
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Demo {
            connections,
            mode,
            attach,
        } => match demo::run_demo(&demo::DemoOptions {
            connections,
            mode,
            attach,
        }) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("podlb demo: {e}");
                ExitCode::from(1)
            }
        },
    }
}
