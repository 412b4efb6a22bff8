//! The `flagger` binary: CLI and wiring.
#![forbid(unsafe_code)]

mod cli;
mod demo;
mod logging;

use std::net::SocketAddr;

use anyhow::Context;
use clap::Parser;
use flagger_actors::cache::Scope;
use flagger_actors::leader::{self, LeaderError, LeaseConfig};
use flagger_actors::notifier::Destination;
use flagger_actors::operator::{OperatorConfig, run};

use crate::cli::{Cli, Command, LeaderElectionArgs, NotifierArgs, RunArgs, WatchScope};

fn main() -> anyhow::Result<()> {
    match Cli::parse().into_command() {
        Command::Crd(args) => args.execute(),
        Command::Run(args) => run_operator(args),
        Command::Demo(args) => demo::run(args),
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
        no_cross_namespace_refs,
        cluster_name,
        max_concurrent_canaries,
        leader_election,
        notifier,
    } = args;
    logging::init(log_level, log_format);
    let LeaderElectionArgs {
        enable_leader_election,
        leader_election_namespace,
        leader_election_lease_duration,
        leader_election_renew_deadline,
        leader_election_retry_period,
    } = leader_election;
    let scope = match namespace {
        WatchScope::AllNamespaces => Scope::All,
        WatchScope::Namespace(ns) => Scope::Namespace(ns),
    };
    let identity = leader::default_identity();
    let leader_election = enable_leader_election.then(|| {
        // Upstream: the Lease lives in the watched namespace when there is one.
        let namespace = leader_election_namespace.unwrap_or_else(|| match &scope {
            Scope::Namespace(ns) => ns.clone(),
            Scope::All => "kube-system".to_owned(),
        });
        LeaseConfig {
            lease_duration: leader_election_lease_duration,
            renew_deadline: leader_election_renew_deadline,
            retry_period: leader_election_retry_period,
            ..LeaseConfig::new(namespace)
        }
    });
    if let Some(lease) = &leader_election {
        check_lease_flags(lease)?;
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
        scope,
        mesh_provider,
        metrics_server,
        listen: SocketAddr::new(listen_address, port),
        selector_labels: selector_labels
            .into_iter()
            .map(|l| l.trim().to_owned())
            .filter(|l| !l.is_empty())
            .collect(),
        config_tracking: enable_config_tracking,
        no_cross_namespace_refs,
        include_label_prefixes: Vec::new(),
        cluster_name: cluster_name.filter(|c| !c.is_empty()),
        global_notifier,
        event_webhook,
        max_concurrent_canaries,
        leader_election,
        identity,
    };
    run(config).context("operator")?;
    Ok(())
}

/// Checked before anything connects; the error names the flag.
fn check_lease_flags(lease: &LeaseConfig) -> anyhow::Result<()> {
    match lease.validate() {
        Ok(()) => Ok(()),
        Err(LeaderError::InvalidConfig { field, reason }) => {
            let flag = match field {
                "namespace" => "--leader-election-namespace",
                "leaseDuration" => "--leader-election-lease-duration",
                "renewDeadline" => "--leader-election-renew-deadline",
                "retryPeriod" => "--leader-election-retry-period",
                other => other,
            };
            anyhow::bail!("{flag}: {reason}")
        }
        Err(other) => Err(other.into()),
    }
}
