//! The `MetricTemplate` custom resource: a provider and a query template that canaries reference
//! from `analysis.metrics[].templateRef`.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::canary::CanaryCondition;

/// A metric query template.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "flagger.app",
    version = "v1beta1",
    kind = "MetricTemplate",
    plural = "metrictemplates",
    namespaced,
    status = "MetricTemplateStatus",
    category = "all",
    annotation("helm.sh/resource-policy", "keep"),
    doc = "MetricTemplate is the Schema for the MetricTemplate API: a provider and a query template.",
    derive = "Default",
    derive = "PartialEq",
    printcolumn(name = "Provider", type_ = "string", json_path = ".spec.provider.type")
)]
#[serde(rename_all = "camelCase")]
pub struct MetricTemplateSpec {
    /// Where the query runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(required)]
    pub provider: Option<MetricProvider>,
    /// Query template; `{{ name }}`, `{{ namespace }}`, `{{ target }}`, `{{ service }}`,
    /// `{{ ingress }}`, `{{ interval }}` and `{{ variables.<key> }}` are substituted.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(required)]
    pub query: Option<String>,
}

/// The metrics backend of a template.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricProvider {
    /// Backend type, e.g. `prometheus`. Parse with [`MetricProvider::kind`].
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    #[schemars(required, extend("enum" = [
        "prometheus", "influxdb", "datadog", "externalmetrics", "stackdriver", "cloudwatch",
        "newrelic", "graphite", "dynatrace", "keptn", "splunk"
    ]))]
    pub type_: Option<String>,
    /// API URL of the backend.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Secret (in the template's namespace) with the credentials.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretRef>,
    /// Headers added to every request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, Vec<String>>>,
    /// CloudWatch region.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Skip TLS verification of the backend.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub insecure_skip_verify: Option<bool>,
}

impl MetricProvider {
    /// The backend type; an unknown name is an error listing the valid ones.
    pub fn kind(&self) -> Result<MetricProviderType, UnknownMetricProvider> {
        self.type_.as_deref().unwrap_or_default().parse()
    }
}

/// Reference to a Secret in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct SecretRef {
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(required)]
    pub name: Option<String>,
}

/// Status of a MetricTemplate (unused by Flagger, kept for compatibility).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct MetricTemplateStatus {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<CanaryCondition>>,
}

/// The metric backends named by `spec.provider.type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MetricProviderType {
    Prometheus,
    InfluxDb,
    Datadog,
    ExternalMetrics,
    Stackdriver,
    CloudWatch,
    NewRelic,
    Graphite,
    Dynatrace,
    Keptn,
    Splunk,
}

impl MetricProviderType {
    /// Every type with its name in manifests.
    pub const ALL: [(Self, &'static str); 11] = [
        (Self::Prometheus, "prometheus"),
        (Self::InfluxDb, "influxdb"),
        (Self::Datadog, "datadog"),
        (Self::ExternalMetrics, "externalmetrics"),
        (Self::Stackdriver, "stackdriver"),
        (Self::CloudWatch, "cloudwatch"),
        (Self::NewRelic, "newrelic"),
        (Self::Graphite, "graphite"),
        (Self::Dynatrace, "dynatrace"),
        (Self::Keptn, "keptn"),
        (Self::Splunk, "splunk"),
    ];

    /// The name used in manifests.
    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(kind, _)| *kind == self)
            .map_or("prometheus", |(_, name)| name)
    }
}

impl fmt::Display for MetricProviderType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `spec.provider.type` that names no known backend.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown metric provider type {name:?}, valid types: {}",
    valid_metric_providers()
)]
pub struct UnknownMetricProvider {
    pub name: String,
}

fn valid_metric_providers() -> String {
    MetricProviderType::ALL.map(|(_, name)| name).join(", ")
}

impl FromStr for MetricProviderType {
    type Err = UnknownMetricProvider;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .iter()
            .find(|(_, name)| *name == s)
            .map(|(kind, _)| *kind)
            .ok_or_else(|| UnknownMetricProvider { name: s.to_owned() })
    }
}
