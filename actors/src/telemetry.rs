//! The operator's own Prometheus metrics (`flagger_*`), with upstream's names, types and labels so
//! existing dashboards and the seed's alert (`flagger_canary_status > 1`) work unchanged.
//!
//! `flagger_canary_status` is 0 while progressing, 2 after a rollback (phase Failed) and 1 for
//! every other phase. A canary whose spec is invalid (or that shares its target with another)
//! reports 1, idle: nothing of it rolls out, and `> 1` alerts are about failed rollouts.
//!
//! One [`Telemetry`] per process, cheap to clone, handed to every actor. Series of a deleted canary
//! are removed with [`Telemetry::forget_canary`] so `/metrics` does not grow without bound.

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use std::sync::Arc;

/// What `flagger_canary_status` reports for a phase: 0 while progressing, 2 when failed, 1 for
/// everything else (initialized, waiting, promoting, succeeded, ...), as upstream; an invalid
/// spec is `Settled` too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusGauge {
    Progressing = 0,
    Settled = 1,
    Failed = 2,
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("registering metric: {0}")]
    Register(#[from] prometheus::Error),
}

/// Handles to the `flagger_*` metric families.
#[derive(Clone)]
pub struct Telemetry {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    canary_total: IntGaugeVec,
    canary_status: IntGaugeVec,
    canary_weight: IntGaugeVec,
    canary_duration: HistogramVec,
    metric_analysis: GaugeVec,
    successes: IntCounterVec,
    failures: IntCounterVec,
}

impl Telemetry {
    /// Registers every family in a fresh registry and sets `flagger_info` to 1.
    pub fn new(version: &str, mesh_provider: &str) -> Result<Self, TelemetryError> {
        let registry = Registry::new();
        let info = IntGaugeVec::new(
            Opts::new(
                "flagger_info",
                "Flagger version and mesh provider information",
            ),
            &["version", "mesh_provider"],
        )?;
        let canary_total = IntGaugeVec::new(
            Opts::new("flagger_canary_total", "Total number of canary objects"),
            &["namespace"],
        )?;
        let canary_status = IntGaugeVec::new(
            Opts::new(
                "flagger_canary_status",
                "Last canary analysis result (0 progressing, 1 succeeded or idle, 2 failed)",
            ),
            &["name", "namespace"],
        )?;
        let canary_weight = IntGaugeVec::new(
            Opts::new(
                "flagger_canary_weight",
                "The virtual service destination weight current value",
            ),
            &["workload", "namespace"],
        )?;
        let canary_duration = HistogramVec::new(
            HistogramOpts::new(
                "flagger_canary_duration_seconds",
                "Seconds spent performing canary analysis.",
            ),
            &["name", "namespace"],
        )?;
        let metric_analysis = GaugeVec::new(
            Opts::new(
                "flagger_canary_metric_analysis",
                "Last canary analysis result per metric",
            ),
            &["name", "namespace", "metric"],
        )?;
        let successes = IntCounterVec::new(
            Opts::new(
                "flagger_canary_successes_total",
                "Total number of canary successes",
            ),
            &[
                "name",
                "namespace",
                "deployment_strategy",
                "analysis_status",
            ],
        )?;
        let failures = IntCounterVec::new(
            Opts::new(
                "flagger_canary_failures_total",
                "Total number of canary failures",
            ),
            &[
                "name",
                "namespace",
                "deployment_strategy",
                "analysis_status",
            ],
        )?;
        registry.register(Box::new(info.clone()))?;
        registry.register(Box::new(canary_total.clone()))?;
        registry.register(Box::new(canary_status.clone()))?;
        registry.register(Box::new(canary_weight.clone()))?;
        registry.register(Box::new(canary_duration.clone()))?;
        registry.register(Box::new(metric_analysis.clone()))?;
        registry.register(Box::new(successes.clone()))?;
        registry.register(Box::new(failures.clone()))?;
        info.with_label_values(&[version, mesh_provider]).set(1);
        Ok(Self {
            inner: Arc::new(Inner {
                registry,
                canary_total,
                canary_status,
                canary_weight,
                canary_duration,
                metric_analysis,
                successes,
                failures,
            }),
        })
    }

    /// Number of Canary objects per namespace.
    pub fn set_canary_total(&self, namespace: &str, count: usize) {
        let count = i64::try_from(count).unwrap_or(i64::MAX);
        self.inner
            .canary_total
            .with_label_values(&[namespace])
            .set(count);
    }

    /// `target` is `spec.targetRef.name`, as upstream labels it.
    pub fn set_status(&self, target: &str, namespace: &str, status: StatusGauge) {
        self.inner
            .canary_status
            .with_label_values(&[target, namespace])
            .set(status as i64);
    }

    /// Two series per canary: `<target>-primary` carries the primary weight, `<target>` the canary's.
    pub fn set_weights(&self, target: &str, namespace: &str, primary: u8, canary: u8) {
        let primary_workload = format!("{target}-primary");
        self.inner
            .canary_weight
            .with_label_values(&[primary_workload.as_str(), namespace])
            .set(i64::from(primary));
        self.inner
            .canary_weight
            .with_label_values(&[target, namespace])
            .set(i64::from(canary));
    }

    /// Duration of one analysis tick.
    pub fn observe_tick(&self, target: &str, namespace: &str, seconds: f64) {
        self.inner
            .canary_duration
            .with_label_values(&[target, namespace])
            .observe(seconds);
    }

    /// Last value of a metric check (the builtin request duration in seconds, as upstream).
    pub fn set_metric(&self, target: &str, namespace: &str, metric: &str, value: f64) {
        self.inner
            .metric_analysis
            .with_label_values(&[target, namespace, metric])
            .set(value);
    }

    /// A promotion: `skipped` when `skipAnalysis` promoted without analysis.
    pub fn record_success(&self, target: &str, namespace: &str, strategy: &str, skipped: bool) {
        let analysis = if skipped { "skipped" } else { "completed" };
        self.inner
            .successes
            .with_label_values(&[target, namespace, strategy, analysis])
            .inc();
    }

    /// A rollback or failed promotion.
    pub fn record_failure(&self, target: &str, namespace: &str, strategy: &str) {
        self.inner
            .failures
            .with_label_values(&[target, namespace, strategy, "completed"])
            .inc();
    }

    /// Drops every series of a deleted canary (the per-namespace total is set by the supervisor).
    pub fn forget_canary(&self, target: &str, namespace: &str) {
        let inner = &self.inner;
        let _ = inner
            .canary_status
            .remove_label_values(&[target, namespace]);
        let primary_workload = format!("{target}-primary");
        let _ = inner
            .canary_weight
            .remove_label_values(&[primary_workload.as_str(), namespace]);
        let _ = inner
            .canary_weight
            .remove_label_values(&[target, namespace]);
        let _ = inner
            .canary_duration
            .remove_label_values(&[target, namespace]);
        let labels = [("name", target), ("namespace", namespace)];
        remove_matching(&inner.metric_analysis, &labels);
        remove_matching(&inner.successes, &labels);
        remove_matching(&inner.failures, &labels);
    }

    /// The registry rendered in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for well-formed families; an error leaves what was written.
        let _ = TextEncoder::new().encode(&self.inner.registry.gather(), &mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }
}

/// Label sets of every series in a family whose labels include all of `wanted`.
fn matching_label_sets(
    families: Vec<prometheus::proto::MetricFamily>,
    wanted: &[(&str, &str)],
) -> Vec<Vec<(String, String)>> {
    let mut out = Vec::new();
    for family in families {
        for metric in family.get_metric() {
            let labels: Vec<(String, String)> = metric
                .get_label()
                .iter()
                .map(|l| (l.name().to_string(), l.value().to_string()))
                .collect();
            let all = wanted
                .iter()
                .all(|(k, v)| labels.iter().any(|(lk, lv)| lk == k && lv == v));
            if all {
                out.push(labels);
            }
        }
    }
    out
}

/// Removes every series of `family` whose labels include all of `wanted`.
fn remove_matching<P: prometheus::core::MetricVecBuilder>(
    family: &prometheus::core::MetricVec<P>,
    wanted: &[(&str, &str)],
) {
    use prometheus::core::Collector;
    for labels in matching_label_sets(family.collect(), wanted) {
        let map: std::collections::HashMap<&str, &str> = labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let _ = family.remove(&map);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn line_value(text: &str, prefix: &str) -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    #[test]
    fn failed_canary_fires_the_seed_alert() {
        let t = Telemetry::new("0.1.0", "istio").unwrap();
        t.set_status("podinfo", "test", StatusGauge::Failed);
        let text = t.render();
        let v = line_value(
            &text,
            "flagger_canary_status{name=\"podinfo\",namespace=\"test\"}",
        );
        assert_eq!(v, Some(2.0), "{text}");
        assert!(text.contains("flagger_info{mesh_provider=\"istio\",version=\"0.1.0\"} 1"));
    }

    #[test]
    fn weights_are_two_series_named_after_the_workloads() {
        let t = Telemetry::new("v", "istio").unwrap();
        t.set_weights("podinfo", "test", 90, 10);
        let text = t.render();
        assert_eq!(
            line_value(
                &text,
                "flagger_canary_weight{namespace=\"test\",workload=\"podinfo\"}"
            ),
            Some(10.0)
        );
        assert_eq!(
            line_value(
                &text,
                "flagger_canary_weight{namespace=\"test\",workload=\"podinfo-primary\"}"
            ),
            Some(90.0)
        );
    }

    #[test]
    fn forgetting_a_canary_removes_all_its_series_and_keeps_others() {
        let t = Telemetry::new("v", "istio").unwrap();
        for name in ["podinfo", "other"] {
            t.set_status(name, "test", StatusGauge::Progressing);
            t.set_weights(name, "test", 50, 50);
            t.observe_tick(name, "test", 0.01);
            t.set_metric(name, "test", "request-success-rate", 99.5);
            t.record_success(name, "test", "canary", false);
            t.record_failure(name, "test", "canary");
        }
        t.forget_canary("podinfo", "test");
        let text = t.render();
        let podinfo_lines: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| l.contains("\"podinfo\"") || l.contains("\"podinfo-primary\""))
            .collect();
        assert!(podinfo_lines.is_empty(), "left behind: {podinfo_lines:?}");
        assert!(text.contains("flagger_canary_successes_total{analysis_status=\"completed\",deployment_strategy=\"canary\",name=\"other\",namespace=\"test\"} 1"));
        assert!(text.contains("name=\"other\""));
    }

    #[test]
    fn skipped_promotions_are_labelled_skipped() {
        let t = Telemetry::new("v", "istio").unwrap();
        t.record_success("podinfo", "test", "canary", true);
        assert!(t.render().contains("analysis_status=\"skipped\""));
    }
}
