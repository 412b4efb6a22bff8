//! The builtin `request-success-rate` and `request-duration` queries (flagger-behavior §4.1–4.2).
//!
//! After whitespace collapsing they are the exact PromQL upstream sends, so a dashboard or a
//! recording rule written for Flagger matches. `{{ target }}` is the canary workload only.

use flagger_rollout::{BuiltinMetric, MeshProvider};

/// A builtin query and the factor that turns its value into the unit the analysis uses
/// (percent for the success rate, milliseconds for the duration).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BuiltinQuery {
    pub template: &'static str,
    pub scale: f64,
}

// Istio: `istio_requests_total` / `istio_request_duration_milliseconds_bucket`, destination side.
const ISTIO_SUCCESS_RATE: &str = r#"
    sum( rate( istio_requests_total{
        reporter="destination",
        destination_workload_namespace="{{ namespace }}",
        destination_workload=~"{{ target }}",
        response_code!~"5.*"
    }[{{ interval }}] ) )
    /
    sum( rate( istio_requests_total{
        reporter="destination",
        destination_workload_namespace="{{ namespace }}",
        destination_workload=~"{{ target }}"
    }[{{ interval }}] ) )
    * 100"#;

const ISTIO_DURATION: &str = r#"
    histogram_quantile( 0.99, sum( rate( istio_request_duration_milliseconds_bucket{
        reporter="destination",
        destination_workload_namespace="{{ namespace }}",
        destination_workload=~"{{ target }}"
    }[{{ interval }}] ) ) by (le) )"#;

// Kubernetes provider (upstream's HttpObserver): the app's own `http_request_duration_seconds`
// histogram, pods of the canary Deployment; seconds, hence the ×1000.
const HTTP_SUCCESS_RATE: &str = r#"
    sum( rate( http_request_duration_seconds_count{
        kubernetes_namespace="{{ namespace }}",
        kubernetes_pod_name=~"{{ target }}-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)",
        status!~"5.*"
    }[{{ interval }}] ) )
    /
    sum( rate( http_request_duration_seconds_count{
        kubernetes_namespace="{{ namespace }}",
        kubernetes_pod_name=~"{{ target }}-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)"
    }[{{ interval }}] ) )
    * 100"#;

const HTTP_DURATION: &str = r#"
    histogram_quantile( 0.99, sum( rate( http_request_duration_seconds_bucket{
        kubernetes_namespace="{{ namespace }}",
        kubernetes_pod_name=~"{{ target }}-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)"
    }[{{ interval }}] ) ) by (le) )"#;

/// The query of `metric` for canaries routed by `provider`.
pub fn builtin_query(provider: MeshProvider, metric: BuiltinMetric) -> BuiltinQuery {
    match (provider, metric) {
        (MeshProvider::Istio, BuiltinMetric::RequestSuccessRate) => BuiltinQuery {
            template: ISTIO_SUCCESS_RATE,
            scale: 1.0,
        },
        (MeshProvider::Istio, BuiltinMetric::RequestDuration) => BuiltinQuery {
            template: ISTIO_DURATION,
            scale: 1.0,
        },
        (MeshProvider::Kubernetes, BuiltinMetric::RequestSuccessRate) => BuiltinQuery {
            template: HTTP_SUCCESS_RATE,
            scale: 1.0,
        },
        (MeshProvider::Kubernetes, BuiltinMetric::RequestDuration) => BuiltinQuery {
            template: HTTP_DURATION,
            scale: 1000.0,
        },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::collections::BTreeMap;

    use flagger_rollout::template::{TemplateVars, collapse_whitespace, render};

    use super::*;

    fn rendered(provider: MeshProvider, metric: BuiltinMetric) -> String {
        let vars = BTreeMap::new();
        let v = TemplateVars {
            name: "podinfo",
            namespace: "default",
            target: "podinfo",
            service: "podinfo",
            ingress: "podinfo",
            route: "podinfo",
            interval: "1m",
            variables: &vars,
        };
        collapse_whitespace(&render(builtin_query(provider, metric).template, &v).unwrap())
            .trim()
            .to_owned()
    }

    // The expected strings are what upstream Flagger sends (its observer tests), trimmed.
    #[test]
    fn istio_queries_match_upstream() {
        assert_eq!(
            rendered(MeshProvider::Istio, BuiltinMetric::RequestSuccessRate),
            r#"sum( rate( istio_requests_total{ reporter="destination", destination_workload_namespace="default", destination_workload=~"podinfo", response_code!~"5.*" }[1m] ) ) / sum( rate( istio_requests_total{ reporter="destination", destination_workload_namespace="default", destination_workload=~"podinfo" }[1m] ) ) * 100"#
        );
        assert_eq!(
            rendered(MeshProvider::Istio, BuiltinMetric::RequestDuration),
            r#"histogram_quantile( 0.99, sum( rate( istio_request_duration_milliseconds_bucket{ reporter="destination", destination_workload_namespace="default", destination_workload=~"podinfo" }[1m] ) ) by (le) )"#
        );
    }

    #[test]
    fn kubernetes_queries_match_upstream() {
        assert_eq!(
            rendered(MeshProvider::Kubernetes, BuiltinMetric::RequestSuccessRate),
            r#"sum( rate( http_request_duration_seconds_count{ kubernetes_namespace="default", kubernetes_pod_name=~"podinfo-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)", status!~"5.*" }[1m] ) ) / sum( rate( http_request_duration_seconds_count{ kubernetes_namespace="default", kubernetes_pod_name=~"podinfo-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)" }[1m] ) ) * 100"#
        );
        assert_eq!(
            rendered(MeshProvider::Kubernetes, BuiltinMetric::RequestDuration),
            r#"histogram_quantile( 0.99, sum( rate( http_request_duration_seconds_bucket{ kubernetes_namespace="default", kubernetes_pod_name=~"podinfo-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)" }[1m] ) ) by (le) )"#
        );
        assert_eq!(
            builtin_query(MeshProvider::Kubernetes, BuiltinMetric::RequestDuration).scale,
            1000.0
        );
    }
}
