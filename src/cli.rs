//! Command line of the `flagger` binary.
//!
//! `flagger [FLAGS]` runs the operator (like upstream's `flagger -kubeconfig ...`), `flagger run
//! [FLAGS]` does the same, `flagger crd` prints the CustomResourceDefinitions and `flagger demo`
//! shows a promotion and a rollback on a simulated cluster. Every operator flag
//! also reads an environment variable. Secret values (webhook URLs, tokens, proxy URLs that may carry
//! credentials) are held in [`Secret`], whose `Debug` and `Display` never show the value, and their
//! environment values are hidden from `--help`.

use std::io::Write;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use clap::builder::BoolishValueParser;
use clap::{Args, Parser, Subcommand, ValueEnum};
use flagger_actors::crd::Secret;
use flagger_rollout::spec::MeshProvider;

/// Flagger: progressive delivery (canary releases) for Kubernetes.
#[derive(Debug, Parser)]
#[command(name = "flagger", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Operator flags when no subcommand is given (`flagger --kubeconfig x` runs the operator).
    #[command(flatten)]
    run: RunArgs,
}

impl Cli {
    /// The command to execute; no subcommand means `run`.
    pub fn into_command(self) -> Command {
        let Self { command, run } = self;
        command.unwrap_or(Command::Run(run))
    }
}

// Parsed once per process; boxing the operator flags would only add noise.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the operator (the default when no subcommand is given).
    Run(RunArgs),
    /// Print Flagger's CustomResourceDefinitions as YAML, or write them to a directory.
    Crd(CrdArgs),
    /// Show a canary release on a simulated cluster: a promotion, then a rollback (no Kubernetes
    /// needed).
    Demo(DemoArgs),
}

/// Flags of the operator.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Path to a kubeconfig; without it the in-cluster config or $KUBECONFIG is used.
    #[arg(long, env = "FLAGGER_KUBECONFIG", value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,

    /// Namespace to watch; empty watches all namespaces.
    #[arg(
        long,
        env = "FLAGGER_NAMESPACE",
        default_value = "",
        value_name = "NAMESPACE"
    )]
    pub namespace: WatchScope,

    /// Service mesh that routes traffic, used when a Canary sets no `spec.provider`.
    #[arg(
        long,
        env = "FLAGGER_MESH_PROVIDER",
        default_value = "istio",
        value_name = "PROVIDER"
    )]
    pub mesh_provider: MeshProvider,

    /// Prometheus URL for the builtin metrics.
    #[arg(
        long,
        env = "FLAGGER_METRICS_SERVER",
        default_value = "http://prometheus:9090",
        value_name = "URL"
    )]
    pub metrics_server: String,

    /// Port of the HTTP server (/metrics, /healthz, /readyz); 0 picks a free port (logged).
    #[arg(long, env = "FLAGGER_PORT", default_value_t = 8080)]
    pub port: u16,

    /// Address the HTTP server listens on.
    #[arg(
        long,
        env = "FLAGGER_LISTEN_ADDRESS",
        default_value = "0.0.0.0",
        value_name = "IP"
    )]
    pub listen_address: std::net::IpAddr,

    /// Minimum level of log lines.
    #[arg(long, env = "FLAGGER_LOG_LEVEL", value_enum, default_value_t = LogLevel::Info)]
    pub log_level: LogLevel,

    /// Log line format: JSON objects with `level`, `msg` and fields, or human-readable text.
    #[arg(long, env = "FLAGGER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,

    /// Labels whose value names the workload; the primary gets `<value>-primary`.
    #[arg(
        long,
        env = "FLAGGER_SELECTOR_LABELS",
        value_delimiter = ',',
        default_value = "app,name,app.kubernetes.io/name",
        value_name = "LABELS"
    )]
    pub selector_labels: Vec<String>,

    /// Track the ConfigMaps and Secrets the workload references and copy them to `-primary`.
    #[arg(
        long,
        env = "FLAGGER_ENABLE_CONFIG_TRACKING",
        value_parser = BoolishValueParser::new(),
        num_args = 0..=1,
        default_value = "true",
        default_missing_value = "true",
        value_name = "BOOL"
    )]
    pub enable_config_tracking: bool,

    /// Forbid references to MetricTemplates, AlertProviders and upstreams in other namespaces.
    #[arg(
        long,
        env = "FLAGGER_NO_CROSS_NAMESPACE_REFS",
        value_parser = BoolishValueParser::new(),
        num_args = 0..=1,
        default_value = "false",
        default_missing_value = "true",
        value_name = "BOOL"
    )]
    pub no_cross_namespace_refs: bool,

    /// At most this many canaries progress at once, operator-wide; the others wait in phase
    /// Waiting ("waiting for a rollout slot") and start in the order they asked. Unset: no limit.
    #[arg(
        long,
        env = "FLAGGER_MAX_CONCURRENT_CANARIES",
        value_parser = clap::value_parser!(u32).range(1..),
        value_name = "N"
    )]
    pub max_concurrent_canaries: Option<u32>,

    /// Name of the cluster, shown in notifications.
    #[arg(long, env = "FLAGGER_CLUSTER_NAME", value_name = "NAME")]
    pub cluster_name: Option<String>,

    #[command(flatten)]
    pub leader_election: LeaderElectionArgs,

    #[command(flatten)]
    pub notifier: NotifierArgs,
}

/// Leader election flags: only the holder of a Lease writes to the cluster.
#[derive(Debug, Clone, Args)]
pub struct LeaderElectionArgs {
    /// Run with leader election so several replicas can run and only one acts.
    #[arg(
        long,
        env = "FLAGGER_ENABLE_LEADER_ELECTION",
        value_parser = BoolishValueParser::new(),
        num_args = 0..=1,
        default_value = "false",
        default_missing_value = "true",
        value_name = "BOOL"
    )]
    pub enable_leader_election: bool,

    /// Namespace of the leader election Lease [default: the --namespace watched, else kube-system].
    #[arg(
        long,
        env = "FLAGGER_LEADER_ELECTION_NAMESPACE",
        value_name = "NAMESPACE"
    )]
    pub leader_election_namespace: Option<String>,

    /// How long a Lease holds without renewal before another replica may take it.
    #[arg(
        long,
        env = "FLAGGER_LEADER_ELECTION_LEASE_DURATION",
        default_value = "15s",
        value_parser = go_duration,
        value_name = "DURATION"
    )]
    pub leader_election_lease_duration: Duration,

    /// How long the leader keeps failing to renew before it steps down (shorter than the lease).
    #[arg(
        long,
        env = "FLAGGER_LEADER_ELECTION_RENEW_DEADLINE",
        default_value = "10s",
        value_parser = go_duration,
        value_name = "DURATION"
    )]
    pub leader_election_renew_deadline: Duration,

    /// Interval between attempts to acquire or renew the Lease (shorter than the renew deadline).
    #[arg(
        long,
        env = "FLAGGER_LEADER_ELECTION_RETRY_PERIOD",
        default_value = "2s",
        value_parser = go_duration,
        value_name = "DURATION"
    )]
    pub leader_election_retry_period: Duration,
}

fn go_duration(text: &str) -> Result<Duration, String> {
    flagger_rollout::duration::parse_go_duration(text)
}

/// Global notification targets (every canary's events go there).
#[derive(Debug, Clone, Args)]
pub struct NotifierArgs {
    /// Slack incoming webhook URL.
    #[arg(long, env = "SLACK_URL", hide_env_values = true, value_name = "URL")]
    pub slack_url: Option<Secret>,

    /// Slack bot token (with `--slack-url https://slack.com/api/chat.postMessage`).
    #[arg(
        long,
        env = "SLACK_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub slack_token: Option<Secret>,

    /// Slack channel.
    #[arg(long, env = "SLACK_CHANNEL", value_name = "CHANNEL")]
    pub slack_channel: Option<String>,

    /// Slack user name the messages are posted as.
    #[arg(
        long,
        env = "SLACK_USER",
        default_value = "flagger",
        value_name = "USER"
    )]
    pub slack_user: String,

    /// HTTP(S) proxy for Slack.
    #[arg(
        long,
        env = "SLACK_PROXY_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub slack_proxy_url: Option<Secret>,

    /// Microsoft Teams incoming webhook URL.
    #[arg(long, env = "MSTEAMS_URL", hide_env_values = true, value_name = "URL")]
    pub msteams_url: Option<Secret>,

    /// HTTP(S) proxy for Microsoft Teams.
    #[arg(
        long,
        env = "MSTEAMS_PROXY_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub msteams_proxy_url: Option<Secret>,

    /// URL that receives every Kubernetes event of every canary as a JSON POST.
    #[arg(
        long,
        env = "EVENT_WEBHOOK_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub event_webhook: Option<Secret>,
}

/// Flags of `flagger crd`.
#[derive(Debug, Clone, Args)]
pub struct CrdArgs {
    /// Write one file per CRD into this directory (e.g. `charts/flagger/crds`) instead of printing.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

impl CrdArgs {
    /// Print every CRD as one YAML stream, or write `<dir>/<kind>.yaml` files.
    pub fn execute(self) -> anyhow::Result<()> {
        let Self { out } = self;
        match out {
            None => {
                let yaml = flagger_actors::crd::render_all_yaml()?;
                match std::io::stdout().lock().write_all(yaml.as_bytes()) {
                    // `flagger crd | head` closing the pipe early is not a failure.
                    Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                    other => other.context("writing CRDs to stdout")?,
                }
            }
            Some(dir) => {
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
                for generated in flagger_actors::crd::crds() {
                    let path = dir.join(generated.file_name);
                    let yaml = flagger_actors::crd::render_crd_yaml(&generated.crd)?;
                    std::fs::write(&path, yaml)
                        .with_context(|| format!("writing {}", path.display()))?;
                }
            }
        }
        Ok(())
    }
}

/// Flags of `flagger demo`.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Keep the simulated cluster and the operator running after the demo, until Ctrl-C.
    #[arg(long)]
    pub keep: bool,
}

/// Which namespaces the operator watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchScope {
    AllNamespaces,
    Namespace(String),
}

impl FromStr for WatchScope {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        Ok(if s.is_empty() {
            Self::AllNamespaces
        } else {
            Self::Namespace(s.to_owned())
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line with `level`, `msg` and structured fields (`jq .msg` works).
    Json,
    /// Human-readable lines.
    Text,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn run_args(args: &[&str]) -> RunArgs {
        let argv = std::iter::once("flagger").chain(args.iter().copied());
        match Cli::try_parse_from(argv).unwrap().into_command() {
            Command::Run(run) => run,
            other => panic!("expected run, got {other:?}"),
        }
    }

    #[test]
    fn no_subcommand_runs_the_operator_with_upstream_defaults() {
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
        } = run_args(&["--kubeconfig", "/tmp/kubeconfig"]);
        assert_eq!(kubeconfig, Some(PathBuf::from("/tmp/kubeconfig")));
        assert_eq!(namespace, WatchScope::AllNamespaces);
        assert_eq!(mesh_provider, MeshProvider::Istio);
        assert_eq!(metrics_server, "http://prometheus:9090");
        assert_eq!(port, 8080);
        assert_eq!(listen_address, std::net::IpAddr::from([0, 0, 0, 0]));
        assert_eq!(log_level, LogLevel::Info);
        assert_eq!(log_format, LogFormat::Json);
        assert_eq!(selector_labels, ["app", "name", "app.kubernetes.io/name"]);
        assert!(enable_config_tracking);
        assert!(!no_cross_namespace_refs);
        assert_eq!(cluster_name, None);
        assert_eq!(max_concurrent_canaries, None, "unlimited by default");
        let LeaderElectionArgs {
            enable_leader_election,
            leader_election_namespace,
            leader_election_lease_duration,
            leader_election_renew_deadline,
            leader_election_retry_period,
        } = leader_election;
        assert!(!enable_leader_election);
        assert_eq!(leader_election_namespace, None);
        assert_eq!(leader_election_lease_duration, Duration::from_secs(15));
        assert_eq!(leader_election_renew_deadline, Duration::from_secs(10));
        assert_eq!(leader_election_retry_period, Duration::from_secs(2));
        assert_eq!(notifier.slack_user, "flagger");
    }

    #[test]
    fn run_subcommand_takes_the_same_flags() {
        let run = run_args(&[
            "run",
            "--namespace",
            "test",
            "--mesh-provider",
            "kubernetes",
            "--port",
            "0",
            "--log-format",
            "text",
            "--log-level",
            "debug",
            "--selector-labels",
            "app,team",
            "--enable-config-tracking=false",
            "--enable-leader-election",
            "--leader-election-namespace",
            "flagger-system",
            "--cluster-name",
            "prod-eu",
            "--max-concurrent-canaries",
            "3",
        ]);
        assert_eq!(run.namespace, WatchScope::Namespace("test".to_owned()));
        assert_eq!(run.mesh_provider, MeshProvider::Kubernetes);
        assert_eq!(run.port, 0);
        assert_eq!(run.log_format, LogFormat::Text);
        assert_eq!(run.log_level, LogLevel::Debug);
        assert_eq!(run.selector_labels, ["app", "team"]);
        assert!(!run.enable_config_tracking);
        assert!(run.leader_election.enable_leader_election);
        assert_eq!(
            run.leader_election.leader_election_namespace.as_deref(),
            Some("flagger-system")
        );
        assert_eq!(run.cluster_name.as_deref(), Some("prod-eu"));
        assert_eq!(run.max_concurrent_canaries, Some(3));
    }

    #[test]
    fn max_concurrent_canaries_must_be_a_positive_number() {
        for bad in ["0", "-1", "many"] {
            let flag = format!("--max-concurrent-canaries={bad}");
            let err = Cli::try_parse_from(["flagger", flag.as_str()])
                .unwrap_err()
                .to_string();
            assert!(err.contains("--max-concurrent-canaries"), "{bad}: {err}");
        }
    }

    #[test]
    fn leader_election_takes_the_charts_flags_and_short_durations() {
        // The chart renders exactly these two.
        let run = run_args(&[
            "--enable-leader-election=true",
            "--leader-election-namespace=flagger-system",
            "--leader-election-lease-duration=3s",
            "--leader-election-renew-deadline",
            "2s",
            "--leader-election-retry-period=500ms",
        ]);
        let le = run.leader_election;
        assert!(le.enable_leader_election);
        assert_eq!(
            le.leader_election_namespace.as_deref(),
            Some("flagger-system")
        );
        assert_eq!(le.leader_election_lease_duration, Duration::from_secs(3));
        assert_eq!(le.leader_election_renew_deadline, Duration::from_secs(2));
        assert_eq!(le.leader_election_retry_period, Duration::from_millis(500));
        let err = Cli::try_parse_from(["flagger", "--leader-election-retry-period", "2"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--leader-election-retry-period"), "{err}");
        assert!(err.contains("missing unit"), "{err}");
    }

    #[test]
    fn unknown_mesh_provider_is_rejected_listing_the_valid_ones() {
        let err = Cli::try_parse_from(["flagger", "--mesh-provider", "istoi"]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("--mesh-provider"), "{text}");
        assert!(
            text.contains("valid providers: istio, kubernetes"),
            "{text}"
        );
        let err = Cli::try_parse_from(["flagger", "--mesh-provider", "linkerd"]).unwrap_err();
        assert!(err.to_string().contains("does not support"), "{err}");
    }

    #[test]
    fn unknown_log_format_is_rejected() {
        let err = Cli::try_parse_from(["flagger", "--log-format", "xml"]).unwrap_err();
        assert!(
            err.to_string().contains("[possible values: json, text]"),
            "{err}"
        );
    }

    #[test]
    fn secrets_are_redacted_in_debug_and_display_but_usable() {
        let url = "https://hooks.slack.com/services/T000/B000/XXXXSECRET";
        let cli = Cli::try_parse_from([
            "flagger",
            "--slack-url",
            url,
            "--slack-token",
            "xoxb-SECRET",
            "--msteams-url",
            "https://outlook.office.com/webhook/SECRET",
            "--event-webhook",
            "https://events.example.com/SECRET",
            "--slack-proxy-url",
            "http://user:SECRET@proxy:3128",
        ])
        .unwrap();
        let debug = format!("{cli:?}");
        assert!(!debug.contains("SECRET"), "{debug}");
        assert!(debug.contains("<redacted>"), "{debug}");
        let Command::Run(run) = cli.into_command() else {
            panic!("expected run")
        };
        let slack = run.notifier.slack_url.unwrap();
        assert_eq!(slack.to_string(), "<redacted>");
        assert_eq!(slack.expose(), url);
    }

    #[test]
    fn crd_subcommand_parses_out_dir_and_refuses_operator_flags() {
        let cli = Cli::try_parse_from(["flagger", "crd", "--out", "charts/flagger/crds"]).unwrap();
        let Command::Crd(CrdArgs { out }) = cli.into_command() else {
            panic!("expected crd")
        };
        assert_eq!(out, Some(PathBuf::from("charts/flagger/crds")));
        assert!(Cli::try_parse_from(["flagger", "--port", "1", "crd"]).is_err());
    }

    /// Marker telling [`environment_child`] it runs as the child of [`flags_read_environment_variables`].
    const CHILD_MARKER: &str = "FLAGGER_CLI_TEST_CHILD";

    #[test]
    fn flags_read_environment_variables() {
        // Environment variables are process-wide (and setting them is unsafe), so parse in a child.
        let output = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "cli::tests::environment_child", "--nocapture"])
            .env(CHILD_MARKER, "1")
            .env("FLAGGER_KUBECONFIG", "/etc/kube/config")
            .env("FLAGGER_NAMESPACE", "test")
            .env("FLAGGER_MESH_PROVIDER", "kubernetes")
            .env("FLAGGER_METRICS_SERVER", "http://127.0.0.1:9090")
            .env("FLAGGER_PORT", "9797")
            .env("FLAGGER_LOG_LEVEL", "warn")
            .env("FLAGGER_LOG_FORMAT", "text")
            .env("FLAGGER_SELECTOR_LABELS", "app.kubernetes.io/name")
            .env("FLAGGER_ENABLE_CONFIG_TRACKING", "false")
            .env("FLAGGER_CLUSTER_NAME", "dev")
            .env("FLAGGER_MAX_CONCURRENT_CANARIES", "5")
            .env("FLAGGER_ENABLE_LEADER_ELECTION", "true")
            .env("FLAGGER_LEADER_ELECTION_NAMESPACE", "flagger")
            .env("FLAGGER_LEADER_ELECTION_LEASE_DURATION", "20s")
            .env("SLACK_URL", "https://hooks.slack.com/services/ENV")
            .env("SLACK_CHANNEL", "releases")
            .env("SLACK_USER", "bot")
            .env("MSTEAMS_URL", "https://teams.example.com/ENV")
            .env("EVENT_WEBHOOK_URL", "https://events.example.com/ENV")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "child failed:\n{stdout}");
        assert!(stdout.contains("1 passed"), "child did not run:\n{stdout}");
    }

    #[test]
    fn environment_child() {
        // Only meaningful as the child of `flags_read_environment_variables`.
        if std::env::var_os(CHILD_MARKER).is_none() {
            return;
        }
        let run = run_args(&[]);
        assert_eq!(run.kubeconfig, Some(PathBuf::from("/etc/kube/config")));
        assert_eq!(run.namespace, WatchScope::Namespace("test".to_owned()));
        assert_eq!(run.mesh_provider, MeshProvider::Kubernetes);
        assert_eq!(run.metrics_server, "http://127.0.0.1:9090");
        assert_eq!(run.port, 9797);
        assert_eq!(run.log_level, LogLevel::Warn);
        assert_eq!(run.log_format, LogFormat::Text);
        assert_eq!(run.selector_labels, ["app.kubernetes.io/name"]);
        assert!(!run.enable_config_tracking);
        assert_eq!(run.cluster_name.as_deref(), Some("dev"));
        assert_eq!(run.max_concurrent_canaries, Some(5));
        assert!(run.leader_election.enable_leader_election);
        assert_eq!(
            run.leader_election.leader_election_namespace.as_deref(),
            Some("flagger")
        );
        assert_eq!(
            run.leader_election.leader_election_lease_duration,
            Duration::from_secs(20)
        );
        let n = &run.notifier;
        assert_eq!(
            n.slack_url.as_ref().map(Secret::expose),
            Some("https://hooks.slack.com/services/ENV")
        );
        assert_eq!(n.slack_channel.as_deref(), Some("releases"));
        assert_eq!(n.slack_user, "bot");
        assert_eq!(
            n.msteams_url.as_ref().map(Secret::expose),
            Some("https://teams.example.com/ENV")
        );
        assert_eq!(
            n.event_webhook.as_ref().map(Secret::expose),
            Some("https://events.example.com/ENV")
        );
        // A flag beats its environment variable.
        assert_eq!(run_args(&["--port", "1234"]).port, 1234);
    }
}
