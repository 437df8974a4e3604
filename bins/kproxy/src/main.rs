//! kproxy, the node binary: a drop-in for kube-proxy.
//!
//! - `kproxy [flags]` / `kproxy run [flags]`: the node daemon.
//! - `kproxy rules --source PATH [flags]`: print the rules for a cluster given as manifests.
//! - `kproxy demo`: a sandbox of network namespaces running the real thing.
//! - `kproxy --cleanup`: remove everything kproxy (or kube-proxy) programmed.

mod config;
mod flags;
mod host;
mod rules;
mod setup;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// kproxy: a Kubernetes service proxy (kube-proxy compatible).
#[derive(Debug, Parser)]
#[command(name = "kproxy", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the rules the node daemon would program for a cluster given as manifests (a
    /// dry run; no root needed).
    Rules(rules::RulesArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Some(Command::Rules(args)) => rules::run(
            args,
            &mut std::io::stdout().lock(),
            &mut std::io::stderr().lock(),
        ),
        None => {
            eprintln!(
                "kproxy: the node daemon arrives with `kproxy run`; try `kproxy rules --help`"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kproxy: {e:#}");
            ExitCode::FAILURE
        }
    }
}
