//! The write gate at the actor level, against the in-process testbed: while another replica holds
//! the Lease, this replica's WorkloadActor, RouterActor and CanaryWriter (status, finalizer,
//! events) send no write to the API server and say why, while their reads still work; once this
//! replica holds the Lease they write; the moment it steps down they are refused again.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Actor;
use flagger_actors::crd::Canary;
use flagger_actors::events::EventRecorder;
use flagger_actors::gate::{WriteGate, gated_client};
use flagger_actors::key::CanaryKey;
use flagger_actors::kubeops::{CanaryRef, SelectorLabel};
use flagger_actors::leader::{LeaderElector, LeaderHandle, LeaseConfig};
use flagger_actors::messages::{
    EnsurePrimary, GetRoutes, ReconcileRoutes, RecordEvent, SetFinalizer, WriteCanaryStatus,
};
use flagger_actors::router::{RouterActor, RouterConfig, RouterStores};
use flagger_actors::status::CanaryWriter;
use flagger_actors::workload::{WorkloadActor, WorkloadConfig, WorkloadStores};
use flagger_rollout::{
    CanaryInput, CanarySpec, CanaryStatus, EventType, MeshProvider, ObjectRefInput, Phase,
    ServiceInput,
};
use flagger_testbed::{Config, Testbed};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const NS: &str = "default";

fn lease(identity: &str) -> LeaseConfig {
    LeaseConfig {
        identity: identity.to_owned(),
        lease_duration: Duration::from_millis(1500),
        renew_deadline: Duration::from_millis(1000),
        retry_period: Duration::from_millis(200),
        ..LeaseConfig::new(NS)
    }
}

fn agent_config(tb: &Testbed, agent: &'static str) -> kube::Config {
    let mut config = tb.kubeconfig().unwrap();
    config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_static(agent),
    ));
    config
}

/// Requests of `agent` that can change something, by "VERB resource".
fn writes_by(tb: &Testbed, agent: &str) -> BTreeMap<String, u64> {
    let stats = tb.stats().snapshot();
    stats
        .by_user_agent_and_request
        .get(agent)
        .into_iter()
        .flatten()
        .filter(|(request, _)| {
            !["GET ", "LIST ", "WATCH "]
                .iter()
                .any(|r| request.starts_with(r))
        })
        .map(|(r, n)| (r.clone(), *n))
        .collect()
}

async fn wait_until(what: &str, limit: Duration, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn canary_ref(uid: &str) -> Arc<CanaryRef> {
    let input = CanaryInput {
        name: "podinfo".into(),
        namespace: NS.into(),
        target_ref: Some(ObjectRefInput {
            api_version: Some("apps/v1".into()),
            kind: Some("Deployment".into()),
            name: Some("podinfo".into()),
        }),
        service: Some(ServiceInput {
            port: Some(9898),
            ..Default::default()
        }),
        ..Default::default()
    };
    Arc::new(CanaryRef {
        key: CanaryKey::new(NS, "podinfo"),
        uid: uid.into(),
        api_version: "flagger.app/v1beta1".into(),
        kind: "Canary".into(),
        spec: CanarySpec::new(&input, MeshProvider::Istio).unwrap(),
        selector: SelectorLabel {
            key: "app".into(),
            value: "podinfo".into(),
        },
    })
}

/// The Canary CRD, a target Deployment and a Canary object.
async fn setup(client: &kube::Client) -> Canary {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../charts/flagger/crds/canary.yaml"
    );
    let crd: CustomResourceDefinition =
        serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    crds.create(&PostParams::default(), &crd).await.unwrap();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
    let target = json!({
        "metadata": {"name": "podinfo", "labels": {"app": "podinfo"}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "podinfo"}},
            "template": {
                "metadata": {"labels": {"app": "podinfo"}},
                "spec": {"containers": [{"name": "podinfod", "image": "podinfo:6.0.0"}]}
            }
        }
    });
    deployments
        .create(
            &PostParams::default(),
            &serde_json::from_value(target).unwrap(),
        )
        .await
        .unwrap();
    let canaries: Api<Canary> = Api::namespaced(client.clone(), NS);
    let canary: Canary = serde_json::from_value(json!({
        "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": NS},
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "service": {"port": 9898},
            "analysis": {"interval": "1s", "threshold": 5, "maxWeight": 50, "stepWeight": 10}
        }
    }))
    .unwrap();
    let start = Instant::now();
    loop {
        match canaries.create(&PostParams::default(), &canary).await {
            Ok(created) => return created,
            // The CRD is served shortly after it is created.
            Err(e) if start.elapsed() < Duration::from_secs(10) => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("creating the canary: {e}"),
        }
    }
}

struct Actors {
    workload: actix::Addr<WorkloadActor>,
    router: actix::Addr<RouterActor>,
    writer: actix::Addr<CanaryWriter>,
}

fn actors(client: kube::Client) -> Actors {
    Actors {
        workload: WorkloadActor::new(
            client.clone(),
            WorkloadConfig::default(),
            WorkloadStores::default(),
        )
        .start(),
        router: RouterActor::new(
            client.clone(),
            RouterConfig::default(),
            RouterStores::default(),
        )
        .start(),
        writer: CanaryWriter::new(client.clone(), EventRecorder::new(client, "me")).start(),
    }
}

/// Every write the actors offer, once; the error texts of those that failed.
async fn write_everything(a: &Actors, canary: &Arc<Canary>, cref: &Arc<CanaryRef>) -> Vec<String> {
    let mut errors = Vec::new();
    if let Err(e) = a
        .workload
        .send(EnsurePrimary {
            canary: cref.clone(),
        })
        .await
        .unwrap()
    {
        errors.push(format!("EnsurePrimary: {e}"));
    }
    if let Err(e) = a
        .router
        .send(ReconcileRoutes {
            canary: cref.clone(),
        })
        .await
        .unwrap()
    {
        errors.push(format!("ReconcileRoutes: {e}"));
    }
    let status = CanaryStatus {
        phase: Phase::Initialized,
        ..Default::default()
    };
    let canary = match a
        .writer
        .send(WriteCanaryStatus {
            canary: canary.clone(),
            status: Box::new(status),
        })
        .await
        .unwrap()
    {
        // The finalizer write is guarded by the resourceVersion just written.
        Ok(written) => Arc::new(written),
        Err(e) => {
            errors.push(format!("WriteCanaryStatus: {e}"));
            canary.clone()
        }
    };
    if let Err(e) = a
        .writer
        .send(SetFinalizer {
            canary: canary.clone(),
            present: true,
        })
        .await
        .unwrap()
    {
        errors.push(format!("SetFinalizer: {e}"));
    }
    // Best effort: failures are only logged.
    a.writer
        .send(RecordEvent {
            canary: canary.clone(),
            event_type: EventType::Normal,
            message: "gate test event".into(),
        })
        .await
        .unwrap();
    errors
}

async fn start_elector(tb: &Testbed, identity: &str) -> (LeaderHandle, CancellationToken) {
    let stop = CancellationToken::new();
    let handle = LeaderElector::new(tb.client().unwrap(), lease(identity))
        .unwrap()
        .spawn(stop.clone());
    (handle, stop)
}

#[actix::test]
async fn followers_write_nothing_and_leaders_write_while_they_hold_the_lease() {
    let tb = Testbed::start(Config {
        rps: 0,
        controllers: false,
        ..Default::default()
    })
    .await
    .unwrap();
    let admin = tb.client().unwrap();
    let canary = Arc::new(setup(&admin).await);
    let cref = canary_ref(canary.metadata.uid.as_deref().unwrap());

    let (other, other_stop) = start_elector(&tb, "other").await;
    wait_until("other leads", Duration::from_secs(3), || other.is_leader()).await;
    let (me, me_stop) = start_elector(&tb, "me").await;
    let gate = WriteGate::leader(me.clone());
    let a = actors(gated_client(agent_config(&tb, "me"), gate.clone()).unwrap());
    // Let "me" observe the lease held by "other".
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!me.is_leader() && !gate.is_open());

    // Follower: every write refused, naming the leader; nothing reached the API server.
    let errors = write_everything(&a, &canary, &cref).await;
    assert_eq!(errors.len(), 4, "{errors:#?}");
    for e in &errors {
        assert!(e.contains("not the leader (current leader: other)"), "{e}");
    }
    assert_eq!(writes_by(&tb, "me"), BTreeMap::new());
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), NS);
    assert!(
        deployments
            .get_opt("podinfo-primary")
            .await
            .unwrap()
            .is_none()
    );
    let events: Api<Event> = Api::namespaced(admin.clone(), NS);
    assert!(
        events
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    // Reads pass: the VirtualService does not exist yet.
    let routes = a
        .router
        .send(GetRoutes {
            canary: cref.clone(),
        })
        .await
        .unwrap();
    assert!(matches!(routes, Ok(None)), "{routes:?}");
    assert!(
        tb.stats().snapshot().by_user_agent_and_request["me"]
            .keys()
            .any(|r| r.starts_with("GET ")),
        "the follower's reads reached the API server"
    );

    // "other" shuts down and releases the lease: "me" leads and the same writes go through.
    other_stop.cancel();
    other.finished().await;
    wait_until("me leads", Duration::from_secs(3), || me.is_leader()).await;
    assert!(gate.is_open());
    let errors = write_everything(&a, &canary, &cref).await;
    assert_eq!(errors, Vec::<String>::new());
    let written = writes_by(&tb, "me");
    for request in [
        "POST deployments.apps",
        "POST services",
        "POST virtualservices.networking.istio.io",
        "PATCH canaries.flagger.app",
        "POST events",
    ] {
        assert!(written.contains_key(request), "{request}: {written:?}");
    }
    assert!(
        deployments
            .get_opt("podinfo-primary")
            .await
            .unwrap()
            .is_some()
    );

    // Stepping down closes the gate at once.
    me_stop.cancel();
    me.finished().await;
    let before = writes_by(&tb, "me");
    let fresh = Arc::new(
        Api::<Canary>::namespaced(admin.clone(), NS)
            .get("podinfo")
            .await
            .unwrap(),
    );
    let errors = write_everything(&a, &fresh, &cref).await;
    // EnsurePrimary and ReconcileRoutes find nothing to change; the Canary writes are refused.
    assert!(
        errors.iter().all(|e| e.contains("not the leader")),
        "{errors:#?}"
    );
    assert!(
        errors.iter().any(|e| e.starts_with("WriteCanaryStatus")),
        "{errors:#?}"
    );
    assert_eq!(writes_by(&tb, "me"), before);
    tb.shutdown().await;
}
