//! The `AlertProvider` custom resource: a chat system that canaries reference from
//! `analysis.alerts[].providerRef`.

use std::fmt;
use std::str::FromStr;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::canary::CanaryCondition;
use super::metric_template::SecretRef;

/// Where alerts are sent.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "flagger.app",
    version = "v1beta1",
    kind = "AlertProvider",
    plural = "alertproviders",
    namespaced,
    status = "AlertProviderStatus",
    category = "all",
    annotation("helm.sh/resource-policy", "keep"),
    doc = "AlertProvider is the Schema for the AlertProvider API: a chat system alerts go to.",
    derive = "Default",
    derive = "PartialEq",
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.type")
)]
#[serde(rename_all = "camelCase")]
pub struct AlertProviderSpec {
    /// Chat system. Parse with [`AlertProviderSpec::kind`].
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    #[schemars(required, extend("enum" = ["slack", "msteams", "discord", "rocket", "gchat"]))]
    pub type_: Option<String>,
    /// Channel (default `general`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// Bot name (default `flagger`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Webhook URL; ignored when `secretRef` is set. A secret: never log it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// HTTP(S) proxy URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy: Option<String>,
    /// Secret in the provider's namespace: key `address` (required), optional key `token`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretRef>,
}

impl AlertProviderSpec {
    /// The chat system; an unknown name is an error listing the valid ones.
    pub fn kind(&self) -> Result<AlertProviderType, UnknownAlertProvider> {
        self.type_.as_deref().unwrap_or_default().parse()
    }
}

/// Status of an AlertProvider (unused by Flagger, kept for compatibility).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct AlertProviderStatus {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<CanaryCondition>>,
}

/// The chat systems named by `spec.type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AlertProviderType {
    Slack,
    MsTeams,
    Discord,
    Rocket,
    GChat,
}

impl AlertProviderType {
    /// Every type with its name in manifests.
    pub const ALL: [(Self, &'static str); 5] = [
        (Self::Slack, "slack"),
        (Self::MsTeams, "msteams"),
        (Self::Discord, "discord"),
        (Self::Rocket, "rocket"),
        (Self::GChat, "gchat"),
    ];

    /// The name used in manifests.
    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(kind, _)| *kind == self)
            .map_or("slack", |(_, name)| name)
    }
}

impl fmt::Display for AlertProviderType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `spec.type` that names no known chat system.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown alert provider type {name:?}, valid types: {}",
    valid_alert_providers()
)]
pub struct UnknownAlertProvider {
    pub name: String,
}

fn valid_alert_providers() -> String {
    AlertProviderType::ALL.map(|(_, name)| name).join(", ")
}

impl FromStr for AlertProviderType {
    type Err = UnknownAlertProvider;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .iter()
            .find(|(_, name)| *name == s)
            .map(|(kind, _)| *kind)
            .ok_or_else(|| UnknownAlertProvider { name: s.to_owned() })
    }
}
