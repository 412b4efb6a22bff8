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

/// Read-your-writes: while the VirtualService cache lags behind the router's own write (a cut or
/// relisting watch), reads go to the API server. Otherwise the next tick would see the weights
/// from before its step and apply it again, or skip a rollback's write because the stale copy
/// already said 100/0 — leaving traffic on a canary about to be scaled to zero.
#[actix::test]
async fn a_cache_behind_the_routers_own_write_is_not_trusted() {
    use kube::runtime::reflector::store::Writer;
    use kube::runtime::watcher;
    let tb = Testbed::start(Config::default()).await.unwrap();
    let client = tb.client().unwrap();
    let vs_api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), "default", &virtual_service_resource());
    let mut writer = Writer::new(virtual_service_resource());
    let stores = RouterStores {
        virtual_services: Some(writer.as_reader()),
        ..RouterStores::default()
    };
    let router = RouterActor::new(client, RouterConfig::default(), stores).start();
    let c = canary();
    router
        .send(ReconcileRoutes { canary: c.clone() })
        .await
        .unwrap()
        .unwrap();
    // The cache holds the VirtualService at 100/0 and then stops hearing about it.
    let at_start = vs_api.get("podinfo").await.unwrap();
    writer.apply_watcher_event(&watcher::Event::Apply(at_start.clone()));
    let weights = |w: u8| SetRoutes {
        canary: c.clone(),
        weights: Weights::with_canary(w),
        mirror: false,
    };
    let routes = || async {
        router
            .send(GetRoutes { canary: c.clone() })
            .await
            .unwrap()
            .unwrap()
            .unwrap()
            .weights
    };

    router.send(weights(10)).await.unwrap().unwrap();
    assert_eq!(
        routes().await,
        Weights::with_canary(10),
        "the step just written, not the stale cache's 100/0"
    );
    // Routing back to the primary is written although the stale cache already says 100/0.
    router.send(weights(0)).await.unwrap().unwrap();
    let live = vs_api.get("podinfo").await.unwrap();
    assert_eq!(
        live.data["spec"]["http"][0]["route"][1]["weight"], 0,
        "{}",
        live.data
    );

    // Once the cache has caught up, steady reads are served from it again (no request).
    writer.apply_watcher_event(&watcher::Event::Apply(live));
    tb.stats().reset();
    assert_eq!(routes().await, Weights::ALL_PRIMARY);
    assert_eq!(tb.stats().snapshot().total, 0);
    tb.shutdown().await;
}

/// Counts of the requests made since the last reset, as `"GET virtualservices.networking.istio.io"`.
fn requests(tb: &Testbed) -> std::collections::BTreeMap<String, u64> {
    tb.stats().snapshot().by_verb_and_resource
}

/// A weight step against an up-to-date cache is one request: a merge patch of `spec.http`
/// conditioned on the cached resourceVersion, with no read before it. When the cache is stale
/// (someone else wrote the VirtualService since), the precondition fails with 409 and the router
/// falls back to reading the live object and replacing it, keeping the other writer's change.
#[actix::test]
async fn a_weight_step_on_a_current_cache_is_one_conditioned_patch() {
    use kube::runtime::reflector::store::Writer;
    use kube::runtime::watcher;
    let tb = Testbed::start(Config::default()).await.unwrap();
    let client = tb.client().unwrap();
    let vs_api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), "default", &virtual_service_resource());
    let mut writer = Writer::new(virtual_service_resource());
    let stores = RouterStores {
        virtual_services: Some(writer.as_reader()),
        ..RouterStores::default()
    };
    let router = RouterActor::new(client, RouterConfig::default(), stores).start();
    let c = canary();
    router
        .send(ReconcileRoutes { canary: c.clone() })
        .await
        .unwrap()
        .unwrap();
    let live = vs_api.get("podinfo").await.unwrap();
    writer.apply_watcher_event(&watcher::Event::Apply(live.clone()));
    let weights = |w: u8| SetRoutes {
        canary: c.clone(),
        weights: Weights::with_canary(w),
        mirror: false,
    };
    let vs = "virtualservices.networking.istio.io";

    tb.stats().reset();
    router.send(weights(10)).await.unwrap().unwrap();
    let made = requests(&tb);
    assert_eq!(made.get(&format!("PATCH {vs}")), Some(&1), "{made:?}");
    assert_eq!(tb.stats().snapshot().total, 1, "{made:?}");
    let after = vs_api.get("podinfo").await.unwrap();
    assert_eq!(
        after.data["spec"]["http"][0]["route"],
        json!([
            {"destination": {"host": "podinfo-primary"}, "weight": 90},
            {"destination": {"host": "podinfo-canary"}, "weight": 10}
        ])
    );
    assert_eq!(after.data["spec"]["hosts"], live.data["spec"]["hosts"]);

    // Another client writes the VirtualService; the cache has not heard of it.
    writer.apply_watcher_event(&watcher::Event::Apply(after.clone()));
    let mut foreign = after.clone();
    foreign
        .metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert("example.com/owner".into(), "team-a".into());
    vs_api
        .replace("podinfo", &Default::default(), &foreign)
        .await
        .unwrap();
    tb.stats().reset();
    router.send(weights(20)).await.unwrap().unwrap();
    let made = requests(&tb);
    for verb in ["PATCH", "GET", "PUT"] {
        assert_eq!(made.get(&format!("{verb} {vs}")), Some(&1), "{made:?}");
    }
    let now = vs_api.get("podinfo").await.unwrap();
    assert_eq!(now.data["spec"]["http"][0]["route"][1]["weight"], 20);
    assert_eq!(
        now.metadata.annotations.unwrap()["example.com/owner"],
        "team-a",
        "the fallback keeps the other writer's change"
    );
    tb.shutdown().await;
}
