//! `podlb-lab`: the lab's command line. `podlb demo` execs `podlb-lab demo`;
//! the Python benches build their labs with `podlb-lab up`.
#![forbid(unsafe_code)]

mod cli;

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
    /// Build a lab and keep it until standard input closes or a signal
    /// (TERM, INT, HUP) arrives, then remove everything in it. Prints the
    /// lab's namespaces, addresses and MACs first. Root.
    Up {
        /// A preset (lab, vrrp) or the path of a JSON lab spec
        /// ({"hosts": [{"role", "addr", "prefix_len", "extra_addrs",
        /// "sysctls"}], "sysctls"}).
        spec: String,
        /// Print the description as one JSON line.
        #[arg(long)]
        json: bool,
        /// Keep the lab until a signal or `podlb-lab down`, whatever
        /// standard input does (for running it in the background).
        #[arg(long)]
        no_stdin: bool,
    },
    /// Remove labs by id (plb-<pid>-<n>): their `up` process is told to
    /// remove them; if it is gone, what it left is removed here. Root.
    Down {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Remove plb-<pid>-* namespaces whose process is dead (a killed run). Root.
    Sweep,
    /// Print the podlb config (TOML) of a JSON config spec ({"attach":
    /// {"af_packet": {"interface"}} or {"tap": {"bridge", "name"}}, "workers",
    /// "admin", "services": [{"name", "vip", "port", "mode", "backends",
    /// "health_check"}], "vrrp", "extra"}), checked by podlb's parser.
    Config {
        /// Path of the spec, or "-" for standard input.
        spec: String,
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
        Cmd::Up {
            spec,
            json,
            no_stdin,
        } => cli::up(&spec, json, !no_stdin),
        Cmd::Down { ids } => cli::down(&ids),
        Cmd::Sweep => cli::sweep(),
        Cmd::Config { spec } => cli::config(&spec),
    }
}
