//! The `flagger` binary: CLI and wiring.
#![forbid(unsafe_code)]

mod cli;
mod logging;

use std::net::SocketAddr;

use anyhow::Context;
use clap::Parser;
use flagger_actors::cache::Scope;
use flagger_actors::notifier::Destination;
use flagger_actors::operator::{OperatorConfig, run};

use crate::cli::{Cli, Command, LeaderElectionArgs, NotifierArgs, RunArgs, WatchScope};

fn main() -> anyhow::Result<()> {
    match Cli::parse().into_command() {
        Command::Crd(args) => args.execute(),
        Command::Run(args) => run_operator(args),
    }
}

fn run_operator(args: RunArgs) -> anyhow::Result<()> {
    let RunArgs {
        kubeconfig,
        namespace,
        mesh_provider,
        metrics_server,
        port,
        listen_address,
        log_level,
        log_format,
        selector_labels,
        enable_config_tracking,
        // Enforced by the analysis' reference resolution (issue 7); parsed here already.
        no_cross_namespace_refs: _,
        cluster_name,
        max_concurrent_canaries,
        leader_election,
        notifier,
    } = args;
    logging::init(log_level, log_format);
    let LeaderElectionArgs {
        enable_leader_election,
        leader_election_namespace: _,
    } = leader_election;
    if enable_leader_election {
        anyhow::bail!("--enable-leader-election is not supported yet; run a single replica");
    }
    let NotifierArgs {
        slack_url,
        slack_token,
        slack_channel,
        slack_user,
        slack_proxy_url,
        msteams_url,
        msteams_proxy_url,
        event_webhook,
    } = notifier;
    let global_notifier = Destination::global_from_flags(
        slack_url,
        slack_token,
        slack_channel,
        Some(slack_user),
        slack_proxy_url,
        msteams_url,
        msteams_proxy_url,
    )
    .context("notifier flags")?;
    let config = OperatorConfig {
        kubeconfig,
        scope: match namespace {
            WatchScope::AllNamespaces => Scope::All,
            WatchScope::Namespace(ns) => Scope::Namespace(ns),
        },
        mesh_provider,
        metrics_server,
        listen: SocketAddr::new(listen_address, port),
        selector_labels: selector_labels
            .into_iter()
            .map(|l| l.trim().to_owned())
            .filter(|l| !l.is_empty())
            .collect(),
        config_tracking: enable_config_tracking,
        include_label_prefixes: Vec::new(),
        cluster_name: cluster_name.filter(|c| !c.is_empty()),
        global_notifier,
        event_webhook,
        max_concurrent_canaries,
    };
    run(config).context("operator")?;
    Ok(())
}
