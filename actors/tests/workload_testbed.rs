//! WorkloadActor against the in-process testbed over HTTP: initialization of the primary (with
//! config copies and HPA), scaling, promotion, and that a repeated EnsurePrimary writes nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use actix::Actor;
use flagger_actors::key::CanaryKey;
use flagger_actors::kubeops::{CanaryRef, SelectorLabel};
use flagger_actors::workload::{
    EnsurePrimary, PromoteToPrimary, Scale, WorkloadActor, WorkloadConfig, WorkloadStores,
};
use flagger_rollout::{
    AutoscalerRefInput, CanaryInput, CanarySpec, MeshProvider, ObjectRefInput, ServiceInput,
};
use flagger_testbed::{Config, Testbed};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

fn canary(with_hpa: bool) -> Arc<CanaryRef> {
    let input = CanaryInput {
        name: "podinfo".into(),
        namespace: "default".into(),
        target_ref: Some(ObjectRefInput {
            api_version: Some("apps/v1".into()),
            kind: Some("Deployment".into()),
            name: Some("podinfo".into()),
        }),
        autoscaler_ref: with_hpa.then(|| AutoscalerRefInput {
            api_version: Some("autoscaling/v2".into()),
            kind: Some("HorizontalPodAutoscaler".into()),
            name: Some("podinfo".into()),
            ..Default::default()
        }),
        service: Some(ServiceInput {
            port: Some(9898),
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

fn target(image: &str) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "podinfo", "namespace": "default", "labels": {"app": "podinfo"}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "podinfo"}},
            "template": {
                "metadata": {"labels": {"app": "podinfo"}},
                "spec": {
                    "containers": [{
                        "name": "podinfod", "image": image,
                        "env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "podinfo-token", "key": "token"}}}],
                        "envFrom": [{"configMapRef": {"name": "untracked"}}],
                        "volumeMounts": [{"name": "config", "mountPath": "/etc/podinfo"}]
                    }],
                    "volumes": [{"name": "config", "configMap": {"name": "podinfo-config"}}]
                }
            }
        }
    }))
    .unwrap()
}

async fn setup(tb: &Testbed) -> kube::Client {
    let client = tb.client().unwrap();
    let pp = PostParams::default();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    cms.create(
        &pp,
        &serde_json::from_value(
            json!({"metadata": {"name": "podinfo-config"}, "data": {"color": "blue"}}),
        )
        .unwrap(),
    )
    .await
    .unwrap();
    cms.create(&pp, &serde_json::from_value(json!({"metadata": {"name": "untracked", "annotations": {"flagger.app/config-tracking": "disabled"}}, "data": {"a": "b"}})).unwrap()).await.unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    secrets.create(&pp, &serde_json::from_value(json!({"metadata": {"name": "podinfo-token"}, "type": "Opaque", "data": {"token": "czNjcjN0"}})).unwrap()).await.unwrap();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    deployments
        .create(&pp, &target("ghcr.io/stefanprodan/podinfo:6.0.0"))
        .await
        .unwrap();
    client
}

fn writes(tb: &Testbed) -> u64 {
    let s = tb.stats().snapshot();
    ["POST", "PUT", "PATCH", "DELETE"]
        .iter()
        .map(|v| s.by_verb.get(*v).copied().unwrap_or(0))
        .sum()
}

#[actix::test]
async fn initialization_copies_target_configs_and_hpa() {
    let tb = Testbed::start(Config::default()).await.unwrap();
    let client = setup(&tb).await;
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), "default");
    hpas.create(&PostParams::default(), &serde_json::from_value(json!({
        "metadata": {"name": "podinfo"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"}, "minReplicas": 2, "maxReplicas": 4}
    })).unwrap()).await.unwrap();
    let actor = WorkloadActor::new(
        client.clone(),
        WorkloadConfig::default(),
        WorkloadStores::default(),
    )
    .start();
    let c = canary(true);

    actor
        .send(EnsurePrimary { canary: c.clone() })
        .await
        .unwrap()
        .unwrap();

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let primary = deployments.get("podinfo-primary").await.unwrap();
    assert_eq!(
        primary.metadata.labels.clone().unwrap()["app"],
        "podinfo-primary"
    );
    let owner = &primary.metadata.owner_references.clone().unwrap()[0];
    assert_eq!(
        (owner.uid.as_str(), owner.controller),
        ("0b1c2d3e-canary", Some(true))
    );
    let spec = primary.spec.unwrap();
    assert_eq!(spec.replicas, Some(2));
    assert_eq!(
        spec.selector.match_labels.unwrap()["app"],
        "podinfo-primary"
    );
    let tmpl = spec.template;
    let meta = tmpl.metadata.unwrap();
    assert_eq!(meta.labels.unwrap()["app"], "podinfo-primary");
    assert!(meta.annotations.unwrap().contains_key("flagger-id"));
    let pod = tmpl.spec.unwrap();
    assert_eq!(
        pod.volumes.unwrap()[0].config_map.as_ref().unwrap().name,
        "podinfo-config-primary"
    );
    let container = &pod.containers[0];
    let env = &container.env.as_ref().unwrap()[0];
    assert_eq!(
        env.value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap()
            .name,
        "podinfo-token-primary"
    );
    // Opted out of tracking: the primary keeps using the original.
    assert_eq!(
        container.env_from.as_ref().unwrap()[0]
            .config_map_ref
            .as_ref()
            .unwrap()
            .name,
        "untracked"
    );

    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let copy = cms.get("podinfo-config-primary").await.unwrap();
    assert_eq!(copy.data.unwrap()["color"], "blue");
    assert_eq!(copy.metadata.owner_references.unwrap()[0].kind, "Canary");
    assert!(cms.get_opt("untracked-primary").await.unwrap().is_none());
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    let secret = secrets.get("podinfo-token-primary").await.unwrap();
    assert_eq!(secret.data.unwrap()["token"].0, b"s3cr3t");

    let hpa = hpas.get("podinfo-primary").await.unwrap().spec.unwrap();
    assert_eq!(hpa.scale_target_ref.name, "podinfo-primary");
    assert_eq!((hpa.min_replicas, hpa.max_replicas), (Some(2), 4));

    tb.stats().reset();
    actor
        .send(EnsurePrimary { canary: c.clone() })
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
async fn scaling_and_promotion() {
    let tb = Testbed::start(Config::default()).await.unwrap();
    let client = setup(&tb).await;
    let actor = WorkloadActor::new(
        client.clone(),
        WorkloadConfig::default(),
        WorkloadStores::default(),
    )
    .start();
    let c = canary(false);
    actor
        .send(EnsurePrimary { canary: c.clone() })
        .await
        .unwrap()
        .unwrap();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let replicas = |d: Deployment| d.spec.unwrap().replicas;

    actor
        .send(Scale {
            canary: c.clone(),
            to: flagger_rollout::Scale::ToZero,
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(replicas(deployments.get("podinfo").await.unwrap()), Some(0));
    tb.stats().reset();
    actor
        .send(Scale {
            canary: c.clone(),
            to: flagger_rollout::Scale::ToZero,
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(writes(&tb), 0);
    // Scale from zero takes the primary's replicas.
    actor
        .send(Scale {
            canary: c.clone(),
            to: flagger_rollout::Scale::Up,
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(replicas(deployments.get("podinfo").await.unwrap()), Some(2));

    // New revision: image and config change; promotion copies configs, then the template.
    deployments
        .patch("podinfo", &PatchParams::default(), &Patch::Merge(json!({"spec": {"template": {"spec": {"containers": [{
            "name": "podinfod", "image": "ghcr.io/stefanprodan/podinfo:6.0.1",
            "env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "podinfo-token", "key": "token"}}}],
            "envFrom": [{"configMapRef": {"name": "untracked"}}],
            "volumeMounts": [{"name": "config", "mountPath": "/etc/podinfo"}]
        }]}}}})))
        .await
        .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    cms.patch(
        "podinfo-config",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"color": "green"}})),
    )
    .await
    .unwrap();
    let before = deployments.get("podinfo-primary").await.unwrap();

    actor
        .send(PromoteToPrimary { canary: c.clone() })
        .await
        .unwrap()
        .unwrap();

    let after = deployments.get("podinfo-primary").await.unwrap();
    let pod = after.spec.clone().unwrap().template.spec.unwrap();
    assert_eq!(
        pod.containers[0].image.as_deref(),
        Some("ghcr.io/stefanprodan/podinfo:6.0.1")
    );
    assert_eq!(
        pod.volumes.unwrap()[0].config_map.as_ref().unwrap().name,
        "podinfo-config-primary"
    );
    let id = |d: &Deployment| {
        d.spec
            .clone()
            .unwrap()
            .template
            .metadata
            .unwrap()
            .annotations
            .unwrap()["flagger-id"]
            .clone()
    };
    assert_ne!(
        id(&before),
        id(&after),
        "a promotion restarts the primary pods"
    );
    assert_eq!(
        cms.get("podinfo-config-primary")
            .await
            .unwrap()
            .data
            .unwrap()["color"],
        "green"
    );

    // Promoting again with nothing new writes nothing.
    tb.stats().reset();
    actor
        .send(PromoteToPrimary { canary: c.clone() })
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
