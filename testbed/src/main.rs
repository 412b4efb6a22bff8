//! `flagger-testbed serve`: runs the simulated cluster until SIGINT/SIGTERM. The first two stdout
//! lines are `api: http://127.0.0.1:PORT` and `metrics: http://127.0.0.1:PORT`.
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use flagger_testbed::{Config, Testbed};

#[derive(Parser)]
#[command(
    name = "flagger-testbed",
    about = "A simulated Kubernetes cluster for flagger-rs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the Kubernetes API and the metrics endpoint on 127.0.0.1.
    Serve(ServeArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// API port (0 = a free port).
    #[arg(long, default_value_t = 0)]
    api_port: u16,
    /// Metrics / Prometheus API port (0 = a free port).
    #[arg(long, default_value_t = 0)]
    metrics_port: u16,
    /// Write a kubeconfig for the API here.
    #[arg(long)]
    kubeconfig_out: Option<PathBuf>,
    /// Simulated requests per second per mesh host.
    #[arg(long, default_value_t = 10)]
    rps: u32,
    /// Time until a Deployment becomes ready (e.g. 1s, 500ms, 2m).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    ready_delay: Duration,
    /// Watch events kept for resumption (older resourceVersions get 410 Gone).
    #[arg(long, default_value_t = 10_000)]
    history: usize,
}

/// `500ms`, `1s`, `2m`, `1h`, or a bare number of seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?} (examples: 500ms, 1s, 2m)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => {
            return Err(format!(
                "invalid duration unit {unit:?} in {s:?} (use ms, s, m or h)"
            ));
        }
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let Cli {
        command: Command::Serve(args),
    } = Cli::parse();
    let ServeArgs {
        api_port,
        metrics_port,
        kubeconfig_out,
        rps,
        ready_delay,
        history,
    } = args;
    let cfg = Config {
        api_port,
        metrics_port,
        ready_delay,
        rps,
        history,
        ..Config::default()
    };
    let testbed = Testbed::start(cfg).await.context("starting the testbed")?;
    if let Some(path) = kubeconfig_out {
        std::fs::write(&path, testbed.kubeconfig_yaml())
            .with_context(|| format!("writing the kubeconfig to {}", path.display()))?;
    }
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "api: {}", testbed.api_url())?;
        writeln!(out, "metrics: {}", testbed.metrics_url())?;
        out.flush()?;
    }
    wait_for_signal().await?;
    testbed.shutdown().await;
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for SIGINT")?,
        _ = term.recv() => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("1d").unwrap_err().contains("unit"));
        assert!(parse_duration("x").is_err());
    }
}
