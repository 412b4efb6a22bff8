//! `flagger-bench`: see the library docs and docs/BENCHMARKS.md.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use flagger_bench::{Options, parse_duration, run, table, write_json};

/// Runs the `flagger` binary against the in-process testbed with N canaries: initialization, a
/// new revision of every Deployment, promotion; prints a table and writes `--json`.
#[derive(Parser, Debug)]
#[command(name = "flagger-bench", version)]
struct Args {
    /// Number of namespaces, each with one Deployment and one Canary.
    #[arg(long, default_value_t = 100)]
    canaries: usize,
    /// `analysis.interval` of every Canary (e.g. 10s, 2s, 500ms).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    interval: Duration,
    /// The operator binary.
    #[arg(long, default_value = "target/release/flagger")]
    flagger_bin: PathBuf,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    #[arg(long, default_value_t = 10)]
    step_weight: u32,
    #[arg(long, default_value_t = 50)]
    max_weight: u32,
    /// Simulated requests per second per VirtualService.
    #[arg(long, default_value_t = 10)]
    rps: u32,
    /// Mesh simulation step and Prometheus sampling period.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    sample_every: Duration,
    /// How long the testbed's Deployments take to become ready.
    #[arg(long, default_value = "500ms", value_parser = parse_duration)]
    ready_delay: Duration,
    /// The bench's create/update requests in flight at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Longest wait for all canaries to initialize, and again for all to finish.
    #[arg(long, default_value = "15m", value_parser = parse_duration)]
    timeout: Duration,
    /// Write the operator's log here (discarded by default).
    #[arg(long)]
    operator_log: Option<PathBuf>,
    /// More flags for `flagger run` (repeat: --operator-arg=--log-level --operator-arg=warn).
    #[arg(long = "operator-arg", allow_hyphen_values = true)]
    operator_args: Vec<String>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let a = Args::parse();
    let mut o = Options::new(a.canaries, a.flagger_bin);
    o.interval = a.interval;
    o.step_weight = a.step_weight;
    o.max_weight = a.max_weight;
    o.rps = a.rps;
    o.sample_every = a.sample_every;
    o.ready_delay = a.ready_delay;
    o.concurrency = a.concurrency;
    o.timeout = a.timeout;
    o.operator_log = a.operator_log;
    o.operator_args = a.operator_args;
    match run(&o).await {
        Ok((report, details)) => {
            print!("{}", table(&report, &details));
            if let Some(path) = a.json
                && let Err(e) = write_json(&report, &path)
            {
                eprintln!("flagger-bench: {e:#}");
                return ExitCode::FAILURE;
            }
            if !details.failed.is_empty() {
                eprintln!(
                    "flagger-bench: {} canaries failed: {:?}",
                    details.failed.len(),
                    &details.failed[..details.failed.len().min(10)]
                );
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("flagger-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
