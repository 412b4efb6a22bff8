//! Istio: VirtualService `<svc>` and DestinationRules `<svc>-primary` / `<svc>-canary`
//! (`networking.istio.io/v1beta1`, flagger-behavior §3.4).

use std::time::Duration;

use flagger_rollout::{Routes, Weights};
use kube::Client;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::reflector::Store;

use super::{MeshRouter, RouterError};
use crate::kubeops::CanaryRef;

/// The Istio API version the router reads and writes (served by real clusters and the testbed).
pub const ISTIO_API_VERSION: &str = "v1beta1";

/// `networking.istio.io/v1beta1` VirtualService.
pub fn virtual_service_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("networking.istio.io", ISTIO_API_VERSION, "VirtualService"),
        "virtualservices",
    )
}

/// `networking.istio.io/v1beta1` DestinationRule.
pub fn destination_rule_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("networking.istio.io", ISTIO_API_VERSION, "DestinationRule"),
        "destinationrules",
    )
}

#[derive(Clone)]
pub struct IstioRouter {
    client: Client,
    timeout: Duration,
    virtual_services: Option<Store<DynamicObject>>,
    destination_rules: Option<Store<DynamicObject>>,
}

impl IstioRouter {
    pub fn new(
        client: Client,
        timeout: Duration,
        virtual_services: Option<Store<DynamicObject>>,
        destination_rules: Option<Store<DynamicObject>>,
    ) -> Self {
        Self {
            client,
            timeout,
            virtual_services,
            destination_rules,
        }
    }
}

impl MeshRouter for IstioRouter {
    async fn reconcile(&self, _canary: &CanaryRef) -> Result<(), RouterError> {
        let _ = (
            &self.client,
            self.timeout,
            &self.virtual_services,
            &self.destination_rules,
        );
        Err(RouterError::Unavailable(
            "Istio reconcile is not implemented yet".into(),
        ))
    }

    async fn get_routes(&self, _canary: &CanaryRef) -> Result<Option<Routes>, RouterError> {
        Err(RouterError::Unavailable(
            "Istio get_routes is not implemented yet".into(),
        ))
    }

    async fn set_routes(
        &self,
        _canary: &CanaryRef,
        _weights: Weights,
        _mirror: bool,
    ) -> Result<(), RouterError> {
        Err(RouterError::Unavailable(
            "Istio set_routes is not implemented yet".into(),
        ))
    }

    async fn finalize(&self, _canary: &CanaryRef) -> Result<(), RouterError> {
        Err(RouterError::Unavailable(
            "Istio finalize is not implemented yet".into(),
        ))
    }
}
