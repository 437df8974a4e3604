//! kproxy, the node binary: a drop-in for kube-proxy.
//!
//! - `kproxy [flags]` / `kproxy run [flags]`: the node daemon.
//! - `kproxy rules --source PATH [flags]`: print the rules for a cluster given as manifests.
//! - `kproxy demo`: a sandbox of network namespaces running the real thing.
//! - `kproxy --cleanup`: remove everything kproxy (or kube-proxy) programmed.

mod cleanup;
use kproxy_config as config;
mod demo;
mod engine;
mod flags;
mod host;
mod http;
mod logging;
mod metrics;
mod rules;
mod run;
mod setup;
mod source;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// kproxy: a Kubernetes service proxy (kube-proxy compatible).
///
/// Without a subcommand, kproxy behaves like kube-proxy: it runs the node daemon with
/// kube-proxy's flags (`kproxy --config=/var/lib/kube-proxy/config.conf`), or cleans up
/// with `--cleanup`.
#[derive(Debug, Parser)]
#[command(
    name = "kproxy",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    #[command(flatten)]
    run: run::RunArgs,
}

#[derive(Debug, Subcommand)]
#[command(args_override_self = true)]
enum Command {
    /// Run the node daemon.
    Run(run::RunArgs),
    /// Print the rules the node daemon would program for a cluster given as manifests (a
    /// dry run; no root needed).
    Rules(rules::RulesArgs),
    /// Build a sandbox of network namespaces shaped like the bundled example cluster, run
    /// kproxy on it, send traffic to every Service and show where it went (needs root;
    /// touches nothing outside its own namespaces).
    Demo(demo::DemoArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Rules(args)) => rules::run(
            &args,
            &mut std::io::stdout().lock(),
            &mut std::io::stderr().lock(),
        ),
        Some(Command::Run(args)) => daemon(args),
        Some(Command::Demo(args)) => demo::run(&args, &mut std::io::stdout().lock()),
        None => daemon(cli.run),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kproxy: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn daemon(args: run::RunArgs) -> anyhow::Result<()> {
    logging::init(
        args.flags.verbosity.unwrap_or(0),
        args.flags.logging_format.as_deref() == Some("json"),
    );
    if args.flags.cleanup == Some(true) {
        return cleanup::run(args.iptables_backend);
    }
    run::run(args)
}
