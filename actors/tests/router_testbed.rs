//! RouterActor against the in-process testbed over HTTP: the Services and Istio objects it
//! creates, weight round-trips, and that a steady-state reconcile writes nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use actix::Actor;
use flagger_actors::key::CanaryKey;
use flagger_actors::kubeops::{CanaryRef, SelectorLabel};
use flagger_actors::router::istio::{destination_rule_resource, virtual_service_resource};
use flagger_actors::router::{
    GetRoutes, ReconcileRoutes, RouterActor, RouterConfig, RouterStores, SetRoutes,
};
use flagger_rollout::{
    CanaryInput, CanarySpec, MeshProvider, ObjectRefInput, ServiceInput, Weights,
};
use flagger_testbed::{Config, Testbed};
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, DynamicObject};
use serde_json::json;

fn canary() -> Arc<CanaryRef> {
    let input = CanaryInput {
        name: "podinfo".into(),
        namespace: "default".into(),
        target_ref: Some(ObjectRefInput {
            api_version: Some("apps/v1".into()),
            kind: Some("Deployment".into()),
            name: Some("podinfo".into()),
        }),
        service: Some(ServiceInput {
            port: Some(9898),
            gateways: vec!["public-gateway".into()],
            hosts: vec!["app.example.com".into()],
            traffic_policy: Some(json!({"tls": {"mode": "DISABLE"}})),
            ..Default::default()
        }),
        ..Default::default()
    };
    Arc::new(CanaryRef {
        key: CanaryKey::new("default", "podinfo"),
        uid: "0b1c2d3e-canary".into(),
        api_version: "flagger.app/v1beta1".into(),
        kind: "Canary".into(),
        spec: CanarySpec::new(&input, MeshProvider::Istio).unwrap(),
        selector: SelectorLabel {
            key: "app".into(),
            value: "podinfo".into(),
        },
    })
}

fn writes(tb: &Testbed) -> u64 {
    let s = tb.stats().snapshot();
    ["POST", "PUT", "PATCH", "DELETE"]
        .iter()
        .map(|v| s.by_verb.get(*v).copied().unwrap_or(0))
        .sum()
}

#[actix::test]
async fn initialization_creates_services_virtual_service_and_destination_rules() {
    let tb = Testbed::start(Config::default()).await.unwrap();
    let client = tb.client().unwrap();
    let router = RouterActor::new(
        client.clone(),
        RouterConfig::default(),
        RouterStores::default(),
    )
    .start();
    let c = canary();

    router
        .send(ReconcileRoutes { canary: c.clone() })
        .await
        .unwrap()
        .unwrap();

    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    for (name, selects) in [
        ("podinfo", "podinfo-primary"),
        ("podinfo-primary", "podinfo-primary"),
        ("podinfo-canary", "podinfo"),
    ] {
        let svc = services.get(name).await.unwrap();
        let spec = svc.spec.unwrap();
        assert_eq!(spec.selector.unwrap()["app"], selects, "{name}");
        let port = &spec.ports.unwrap()[0];
        assert_eq!((port.name.as_deref(), port.port), (Some("http"), 9898));
        assert_eq!(svc.metadata.labels.unwrap()["app"], name);
        let owner = &svc.metadata.owner_references.unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("Canary", Some(true))
        );
    }

    let vs_api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), "default", &virtual_service_resource());
    let vs = vs_api.get("podinfo").await.unwrap();
    assert_eq!(
        vs.data["spec"]["hosts"],
        json!(["app.example.com", "podinfo"])
    );
    assert_eq!(vs.data["spec"]["gateways"], json!(["public-gateway"]));
    assert_eq!(
        vs.data["spec"]["http"][0]["route"],
        json!([
            {"destination": {"host": "podinfo-primary"}, "weight": 100},
            {"destination": {"host": "podinfo-canary"}, "weight": 0}
        ])
    );
    let dr_api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), "default", &destination_rule_resource());
    for name in ["podinfo-primary", "podinfo-canary"] {
        let dr = dr_api.get(name).await.unwrap();
        assert_eq!(
            dr.data["spec"],
            json!({"host": name, "trafficPolicy": {"tls": {"mode": "DISABLE"}}})
        );
    }

    // Steady state: a second reconcile writes nothing.
    tb.stats().reset();
    router
        .send(ReconcileRoutes { canary: c.clone() })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        writes(&tb),
        0,
        "{:?}",
        tb.stats().snapshot().by_verb_and_resource
    );
    tb.shutdown().await;
}

#[actix::test]
async fn weights_round_trip_and_survive_reconcile() {
    let tb = Testbed::start(Config::default()).await.unwrap();
    let client = tb.client().unwrap();
    let router = RouterActor::new(client, RouterConfig::default(), RouterStores::default()).start();
    let c = canary();

    assert_eq!(
        router
            .send(GetRoutes { canary: c.clone() })
            .await
            .unwrap()
            .unwrap(),
        None
    );
    router
        .send(ReconcileRoutes { canary: c.clone() })
        .await
        .unwrap()
        .unwrap();
    let routes = router
        .send(GetRoutes { canary: c.clone() })
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(routes.weights, Weights::ALL_PRIMARY);

    let w = Weights::with_canary(30);
    router
        .send(SetRoutes {
            canary: c.clone(),
            weights: w,
            mirror: false,
        })
        .await
        .unwrap()
        .unwrap();
    let routes = router
        .send(GetRoutes { canary: c.clone() })
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!((routes.weights, routes.mirrored), (w, false));

    // Setting the same weights again and reconciling keep them, without writing.
    tb.stats().reset();
    router
        .send(SetRoutes {
            canary: c.clone(),
            weights: w,
            mirror: false,
        })
        .await
        .unwrap()
        .unwrap();
    router
        .send(ReconcileRoutes { canary: c.clone() })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(writes(&tb), 0);
    let routes = router
        .send(GetRoutes { canary: c.clone() })
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(routes.weights.canary(), 30);
    tb.shutdown().await;
}

#[actix::test]
async fn taken_over_objects_are_restored_on_finalize() {
    use flagger_actors::router::FinalizeRoutes;
    use kube::api::PostParams;
    let tb = Testbed::start(Config::default()).await.unwrap();
    let client = tb.client().unwrap();
    let pp = PostParams::default();
    let original =
        json!({"hosts": ["podinfo"], "http": [{"route": [{"destination": {"host": "podinfo"}}]}]});
    let vs_api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), "default", &virtual_service_resource());
    let mut vs = DynamicObject::new("podinfo", &virtual_service_resource()).within("default");
    vs.data = json!({"spec": original});
    vs_api.create(&pp, &vs).await.unwrap();
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let apex: Service = serde_json::from_value(json!({
        "metadata": {"name": "podinfo", "labels": {"owner": "me"}},
        "spec": {"selector": {"app": "podinfo"}, "ports": [{"name": "http", "port": 9898}]}
    }))
    .unwrap();
    services.create(&pp, &apex).await.unwrap();
    let router = RouterActor::new(client, RouterConfig::default(), RouterStores::default()).start();
    let c = canary();

    router
        .send(ReconcileRoutes { canary: c.clone() })
        .await
        .unwrap()
        .unwrap();
    let taken = services.get("podinfo").await.unwrap();
    assert_eq!(
        taken.spec.unwrap().selector.unwrap()["app"],
        "podinfo-primary"
    );
    assert_eq!(
        taken.metadata.labels.unwrap()["owner"],
        "me",
        "metadata of a taken-over Service is left alone"
    );
    let routes = router
        .send(GetRoutes { canary: c.clone() })
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(routes.weights, Weights::ALL_PRIMARY);

    router
        .send(FinalizeRoutes { canary: c.clone() })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        services
            .get("podinfo")
            .await
            .unwrap()
            .spec
            .unwrap()
            .selector
            .unwrap()["app"],
        "podinfo"
    );
    assert_eq!(vs_api.get("podinfo").await.unwrap().data["spec"], original);
    tb.shutdown().await;
}
