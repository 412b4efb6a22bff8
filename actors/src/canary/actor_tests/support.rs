//! A recorder behind every port, fixtures, and a tracing layer that captures log lines (and can
//! panic on one, to put a panic inside a tick without a test hook in the operator).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use flagger_rollout::{CanaryStatus, EventType, ProviderCheck, Routes, Weights};
use kube::ResourceExt;
use serde_json::{Value, json};

use crate::cache::fake::FakeCaches;
use crate::canary::{Env, Settings};
use crate::crd::Canary;
use crate::crd::convert::status_to_crd;
use crate::messages::{
    CallHook, CheckProviders, EnsurePrimary, FinalizeRoutes, ForwardEvent, GetRoutes, Notify,
    PromoteToPrimary, ReconcileRoutes, RecordEvent, RevertTarget, RunQueries, Scale, SetFinalizer,
    SetRoutes, WriteCanaryStatus,
};
use crate::metrics::MetricReply;
use crate::ports::Ports;
use crate::router::RouterError;
use crate::status::StatusError;
use crate::telemetry::Telemetry;
use crate::webhook::{HookResponse, WebhookError};
use crate::workload::WorkloadError;

/// One message a port received.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    EnsurePrimary,
    Promote,
    Scale(flagger_rollout::Scale),
    RevertTarget,
    ReconcileRoutes,
    GetRoutes,
    SetRoutes(u8),
    FinalizeRoutes,
    RunQueries,
    CheckProviders,
    Hook(String),
    ForwardEvent(String),
    Notify(String),
    Event(EventType, String),
    /// The `resourceVersion` of the object the tick decided from, and the status it wrote.
    WriteStatus(String, Box<CanaryStatus>),
    SetFinalizer(bool),
}

/// The state behind the recorder: what it received and how it answers.
#[derive(Default)]
pub struct Fake {
    /// (canary name, call), in arrival order.
    pub calls: Vec<(String, Call)>,
    /// Routes of each canary's mesh object (created by ReconcileRoutes, 100/0).
    pub routes: HashMap<String, Routes>,
    /// Operation name (`"reconcile_routes"`, `"call_hook"`, ...) → the error it answers with.
    pub failing: HashMap<&'static str, String>,
    /// The next status write conflicts; the writer re-read this object.
    pub conflict: Option<Canary>,
}

pub type Shared = Arc<Mutex<Fake>>;

/// One actor behind every port.
pub struct Recorder {
    pub fake: Shared,
    /// Written Canaries go into this store, as the watch would bring them.
    pub caches: Arc<FakeCaches>,
}

impl Actor for Recorder {
    type Context = Context<Self>;
}

impl Recorder {
    fn record(&self, canary: &str, call: Call) -> Option<String> {
        let mut fake = self.fake.lock().unwrap();
        let op = match &call {
            Call::EnsurePrimary => "ensure_primary",
            Call::Promote => "promote",
            Call::Scale(_) => "scale",
            Call::RevertTarget => "revert_target",
            Call::ReconcileRoutes => "reconcile_routes",
            Call::GetRoutes => "get_routes",
            Call::SetRoutes(_) => "set_routes",
            Call::FinalizeRoutes => "finalize_routes",
            Call::Hook(_) => "call_hook",
            _ => "",
        };
        fake.calls.push((canary.to_owned(), call));
        fake.failing.get(op).cloned()
    }
}

macro_rules! workload_port {
    ($msg:ty, $call:expr) => {
        impl Handler<$msg> for Recorder {
            type Result = Result<(), WorkloadError>;
            fn handle(&mut self, msg: $msg, _: &mut Self::Context) -> Self::Result {
                #[allow(clippy::redundant_closure_call)]
                let call = ($call)(&msg);
                match self.record(&msg.canary.key.name, call) {
                    Some(error) => Err(WorkloadError::Unavailable(error)),
                    None => Ok(()),
                }
            }
        }
    };
}

workload_port!(EnsurePrimary, |_: &EnsurePrimary| Call::EnsurePrimary);
workload_port!(PromoteToPrimary, |_: &PromoteToPrimary| Call::Promote);
workload_port!(Scale, |m: &Scale| Call::Scale(m.to));
workload_port!(RevertTarget, |_: &RevertTarget| Call::RevertTarget);

impl Handler<ReconcileRoutes> for Recorder {
    type Result = Result<(), RouterError>;
    fn handle(&mut self, msg: ReconcileRoutes, _: &mut Self::Context) -> Self::Result {
        let name = msg.canary.key.name.clone();
        if let Some(error) = self.record(&name, Call::ReconcileRoutes) {
            return Err(RouterError::Unavailable(error));
        }
        self.fake
            .lock()
            .unwrap()
            .routes
            .entry(name)
            .or_insert(Routes {
                weights: Weights::ALL_PRIMARY,
                mirrored: false,
            });
        Ok(())
    }
}

impl Handler<GetRoutes> for Recorder {
    type Result = Result<Option<Routes>, RouterError>;
    fn handle(&mut self, msg: GetRoutes, _: &mut Self::Context) -> Self::Result {
        let name = msg.canary.key.name.clone();
        if let Some(error) = self.record(&name, Call::GetRoutes) {
            return Err(RouterError::Unavailable(error));
        }
        Ok(self.fake.lock().unwrap().routes.get(&name).copied())
    }
}

impl Handler<SetRoutes> for Recorder {
    type Result = Result<(), RouterError>;
    fn handle(&mut self, msg: SetRoutes, _: &mut Self::Context) -> Self::Result {
        let name = msg.canary.key.name.clone();
        if let Some(error) = self.record(&name, Call::SetRoutes(msg.weights.canary())) {
            return Err(RouterError::Unavailable(error));
        }
        self.fake.lock().unwrap().routes.insert(
            name,
            Routes {
                weights: msg.weights,
                mirrored: msg.mirror,
            },
        );
        Ok(())
    }
}

impl Handler<FinalizeRoutes> for Recorder {
    type Result = Result<(), RouterError>;
    fn handle(&mut self, msg: FinalizeRoutes, _: &mut Self::Context) -> Self::Result {
        match self.record(&msg.canary.key.name, Call::FinalizeRoutes) {
            Some(error) => Err(RouterError::Unavailable(error)),
            None => Ok(()),
        }
    }
}

impl Handler<RunQueries> for Recorder {
    type Result = Vec<MetricReply>;
    fn handle(&mut self, msg: RunQueries, _: &mut Self::Context) -> Self::Result {
        self.record(&msg.canary.name, Call::RunQueries);
        Vec::new()
    }
}

impl Handler<CheckProviders> for Recorder {
    type Result = MessageResult<CheckProviders>;
    fn handle(&mut self, msg: CheckProviders, _: &mut Self::Context) -> Self::Result {
        self.record(&msg.canary.name, Call::CheckProviders);
        MessageResult(ProviderCheck::Available)
    }
}

impl Handler<CallHook> for Recorder {
    type Result = Result<HookResponse, WebhookError>;
    fn handle(&mut self, msg: CallHook, _: &mut Self::Context) -> Self::Result {
        match self.record(&msg.canary.name, Call::Hook(msg.hook.name.clone())) {
            Some(body) => Ok(HookResponse::Rejected { status: 500, body }),
            None => Ok(HookResponse::Passed { status: 200 }),
        }
    }
}

impl Handler<ForwardEvent> for Recorder {
    type Result = ();
    fn handle(&mut self, msg: ForwardEvent, _: &mut Self::Context) {
        self.record(&msg.canary.name, Call::ForwardEvent(msg.message));
    }
}

impl Handler<Notify> for Recorder {
    type Result = ();
    fn handle(&mut self, msg: Notify, _: &mut Self::Context) {
        self.record(&msg.canary.name, Call::Notify(msg.message));
    }
}

impl Handler<RecordEvent> for Recorder {
    type Result = ();
    fn handle(&mut self, msg: RecordEvent, _: &mut Self::Context) {
        self.record(
            &msg.canary.name_any(),
            Call::Event(msg.event_type, msg.message),
        );
    }
}

impl Handler<WriteCanaryStatus> for Recorder {
    type Result = Result<Canary, StatusError>;
    fn handle(&mut self, msg: WriteCanaryStatus, _: &mut Self::Context) -> Self::Result {
        let name = msg.canary.name_any();
        let rv = msg.canary.resource_version().unwrap_or_default();
        self.record(&name, Call::WriteStatus(rv.clone(), msg.status.clone()));
        if let Some(fresh) = self.fake.lock().unwrap().conflict.take() {
            return Err(StatusError::Stale {
                name,
                fresh: Some(Box::new(fresh)),
            });
        }
        let mut written = (*msg.canary).clone();
        written.status = Some(status_to_crd(&msg.status));
        let next = rv.parse::<u64>().unwrap_or(0) + 1;
        written.metadata.resource_version = Some(next.to_string());
        self.caches.apply_canary(&written);
        Ok(written)
    }
}

impl Handler<SetFinalizer> for Recorder {
    type Result = Result<(), StatusError>;
    fn handle(&mut self, msg: SetFinalizer, _: &mut Self::Context) -> Self::Result {
        self.record(&msg.canary.name_any(), Call::SetFinalizer(msg.present));
        Ok(())
    }
}

/// Answered after every message sent before it: `send(Flush)` waits until the recorder has
/// seen the fire-and-forget events a tick emitted.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Flush;

impl Handler<Flush> for Recorder {
    type Result = ();
    fn handle(&mut self, _: Flush, _: &mut Self::Context) {}
}

/// An actor that stops at once: every `do_send` to it is dropped.
pub struct Gone;

impl Actor for Gone {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl Handler<RecordEvent> for Gone {
    type Result = ();
    fn handle(&mut self, _: RecordEvent, _: &mut Self::Context) {}
}

impl Handler<ForwardEvent> for Gone {
    type Result = ();
    fn handle(&mut self, _: ForwardEvent, _: &mut Self::Context) {}
}

impl Handler<Notify> for Gone {
    type Result = ();
    fn handle(&mut self, _: Notify, _: &mut Self::Context) {}
}

/// The caches, the recorder behind every port, and the Env a CanaryActor runs with.
pub struct World {
    pub caches: Arc<FakeCaches>,
    pub fake: Shared,
    pub recorder: Addr<Recorder>,
    pub env: Env,
}

impl World {
    pub fn new() -> Self {
        let caches = Arc::new(FakeCaches::new());
        let fake: Shared = Arc::default();
        let recorder = Recorder {
            fake: fake.clone(),
            caches: caches.clone(),
        }
        .start();
        let r = &recorder;
        let env = Env {
            caches: caches.caches.clone(),
            ports: Arc::new(Ports::new(r, r, r, r, r, r)),
            telemetry: Telemetry::new("test", "istio").unwrap(),
            settings: Arc::new(Settings {
                default_provider: flagger_rollout::MeshProvider::Istio,
                metrics_server: "http://127.0.0.1:9".into(),
                selector_labels: vec!["app".into()],
                config_tracking: true,
                max_concurrent_canaries: None,
                no_cross_namespace_refs: false,
            }),
            client: None,
            slots: None,
        };
        World {
            caches,
            fake,
            recorder,
            env,
        }
    }

    /// Ready target `<target>` and primary `<target>-primary` in the caches.
    pub fn workloads(&self, target: &str, image: &str) {
        self.caches.apply(deployment(target, image));
        self.caches
            .apply(deployment(&format!("{target}-primary"), "primary-image"));
    }

    /// From now on the port operation `op` (`"reconcile_routes"`, `"call_hook"`, ...) answers
    /// with `error`.
    pub fn fail(&self, op: &'static str, error: &str) {
        self.fake
            .lock()
            .unwrap()
            .failing
            .insert(op, error.to_owned());
    }

    pub fn calls(&self, canary: &str) -> Vec<Call> {
        self.fake
            .lock()
            .unwrap()
            .calls
            .iter()
            .filter(|(c, _)| c == canary)
            .map(|(_, call)| call.clone())
            .collect()
    }

    pub fn count(&self, canary: &str, call: &Call) -> usize {
        self.calls(canary).iter().filter(|c| *c == call).count()
    }

    pub fn events(&self, canary: &str) -> Vec<(EventType, String)> {
        self.calls(canary)
            .into_iter()
            .filter_map(|c| match c {
                Call::Event(t, m) => Some((t, m)),
                _ => None,
            })
            .collect()
    }

    pub fn statuses(&self, canary: &str) -> Vec<(String, CanaryStatus)> {
        self.calls(canary)
            .into_iter()
            .filter_map(|c| match c {
                Call::WriteStatus(rv, s) => Some((rv, *s)),
                _ => None,
            })
            .collect()
    }

    pub async fn flush(&self) {
        self.recorder.send(Flush).await.unwrap();
    }

    /// Polls `check` every 10 ms for up to `timeout`; panics naming `what` and the calls so far.
    pub async fn until(&self, what: &str, timeout: Duration, check: impl Fn(&World) -> bool) {
        let deadline = Instant::now() + timeout;
        while !check(self) {
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}; calls: {:#?}",
                self.fake.lock().unwrap().calls
            );
            actix::clock::sleep(Duration::from_millis(10)).await;
        }
    }
}

pub fn deployment(name: &str, image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "test", "generation": 1, "labels": {"app": name}},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [{"name": "podinfod", "image": image}]}}},
        "status": {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1,
                   "availableReplicas": 1, "readyReplicas": 1}
    })
}

/// Canary `<name>.test` on Deployment `target`, created at `created` (RFC 3339).
pub fn canary(name: &str, target: &str, interval: &str, created: &str) -> Value {
    json!({
        "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
        "metadata": {"name": name, "namespace": "test", "uid": format!("uid-{name}"),
                     "resourceVersion": "1", "creationTimestamp": created},
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
            "service": {"port": 9898},
            "analysis": {"interval": interval, "threshold": 5, "maxWeight": 50, "stepWeight": 10}
        }
    })
}

pub fn object(v: Value) -> Arc<Canary> {
    Arc::new(serde_json::from_value(v).unwrap())
}

/// Log lines seen on this thread: (the `canary` field, `msg`), and optionally one to panic on.
#[derive(Clone, Default)]
pub struct Capture {
    pub seen: Arc<Mutex<Vec<(String, String)>>>,
    pub panic_on: Arc<Mutex<Option<String>>>,
}

thread_local! {
    static CAPTURE: std::cell::RefCell<Option<Capture>> = const { std::cell::RefCell::new(None) };
}

/// Removes the thread's capture when dropped.
pub struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        CAPTURE.with(|c| c.borrow_mut().take());
    }
}

/// The process-wide subscriber hands every event to the capture of the thread it happens on.
/// (A per-thread `set_default` subscriber misses events of callsites that other tests, running
/// in parallel without a subscriber, registered first: tracing caches their interest.)
struct ToThreadCapture;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for ToThreadCapture {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if let Some(capture) = CAPTURE.with(|c| c.borrow().clone()) {
            capture.observe(event);
        }
    }
}

impl Capture {
    /// Captures this thread's log lines until the returned guard is dropped.
    pub fn install(&self) -> Installed {
        use tracing_subscriber::layer::SubscriberExt;
        static GLOBAL: std::sync::Once = std::sync::Once::new();
        GLOBAL.call_once(|| {
            let subscriber = tracing_subscriber::registry().with(ToThreadCapture);
            tracing::subscriber::set_global_default(subscriber)
                .expect("no other global subscriber in the actors unit tests");
        });
        CAPTURE.with(|c| *c.borrow_mut() = Some(self.clone()));
        Installed
    }

    pub fn lines(&self, msg_prefix: &str) -> Vec<(String, String)> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, m)| m.starts_with(msg_prefix))
            .cloned()
            .collect()
    }
}

#[derive(Default)]
struct Fields {
    msg: String,
    canary: String,
}

impl tracing::field::Visit for Fields {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        match field.name() {
            "msg" => self.msg = value.to_owned(),
            "canary" => self.canary = value.to_owned(),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.record_str(field, &format!("{value:?}"));
    }
}

impl Capture {
    fn observe(&self, event: &tracing::Event<'_>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let armed = {
            let mut panic_on = self.panic_on.lock().unwrap();
            match panic_on.as_deref() {
                Some(m) if m == fields.msg => panic_on.take(),
                _ => None,
            }
        };
        self.seen
            .lock()
            .unwrap()
            .push((fields.canary, fields.msg.clone()));
        if armed.is_some() {
            panic!("injected panic at log line {:?}", fields.msg);
        }
    }
}
