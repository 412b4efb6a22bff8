//! The Kubernetes Services of a canary: `<svc>` (apex, selects the primary pods),
//! `<svc>-primary` and `<svc>-canary` (flagger-behavior §3.3).

use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use kube::Client;
use kube::runtime::reflector::Store;

use super::RouterError;
use crate::kubeops::CanaryRef;

/// Reconciles the three Services of a canary.
#[derive(Clone)]
pub struct ServiceRouter {
    client: Client,
    timeout: Duration,
    store: Option<Store<Service>>,
}

impl ServiceRouter {
    pub fn new(client: Client, timeout: Duration, store: Option<Store<Service>>) -> Self {
        Self {
            client,
            timeout,
            store,
        }
    }

    pub async fn reconcile(&self, _canary: &CanaryRef) -> Result<(), RouterError> {
        let _ = (&self.client, self.timeout, &self.store);
        Err(RouterError::Unavailable(
            "Service reconcile is not implemented yet".into(),
        ))
    }

    pub async fn finalize(&self, _canary: &CanaryRef) -> Result<(), RouterError> {
        Err(RouterError::Unavailable(
            "Service finalize is not implemented yet".into(),
        ))
    }
}
