//! Messages of the CanarySupervisor and the CanaryActors (ARCHITECTURE §3), and re-exports of
//! the shared actors' messages so the whole protocol can be read from one place.
//!
//! Every message names its canary with a [`CanaryKey`] (`name.namespace` in logs and spans).

use std::sync::Arc;

use actix::Message;

use crate::crd::Canary;
pub use crate::key::CanaryKey;

// ------------------------------------------------------------------------------------------------
// CanarySupervisor
// ------------------------------------------------------------------------------------------------

/// A Canary was created or changed (or listed when the watch started).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct CanaryApplied(pub Arc<Canary>);

/// A Canary is gone from the cluster.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct CanaryDeleted(pub CanaryKey);

/// The Canary watch listed everything again: stop actors of Canaries that vanished meanwhile.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct CanariesResynced;

/// A watched dependency (target Deployment, its `-primary`, a ConfigMap, Secret or HPA) changed:
/// poke the canaries that use it.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct DependencyChanged {
    pub kind: crate::cache::DependencyKind,
    pub namespace: String,
    pub name: String,
}

/// A dependency watch listed again; changes may have been missed: poke every canary.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct DependenciesResynced;

/// This process became the leader (`leader: true`: start a CanaryActor for every Canary, each
/// resuming from its `.status`) or stopped being it (`false`: stop every CanaryActor, cancelling
/// running ticks, and start none until leader again). Without leader election the supervisor
/// starts as leader and only gets `false` at shutdown.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct LeadershipChanged {
    pub leader: bool,
}

/// A CanaryActor stopped. `crashed` when its tick panicked: the supervisor restarts it from
/// `.status` if the Canary still exists.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct CanaryStopped {
    pub key: CanaryKey,
    /// Identifies the actor instance, so a late notice of an old instance is ignored.
    pub incarnation: u64,
    pub crashed: bool,
}

/// May this canary start a run now (`--max-concurrent-canaries`)? See [`crate::slots`].
#[derive(Debug, Message)]
#[rtype(result = "flagger_rollout::RolloutSlot")]
pub struct RequestRolloutSlot {
    pub key: CanaryKey,
}

/// The canary did not start the run it was granted a slot for, or no longer waits for one.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ReleaseRolloutSlot {
    pub key: CanaryKey,
}

// ------------------------------------------------------------------------------------------------
// CanaryActor
// ------------------------------------------------------------------------------------------------

/// A rollout slot this canary waits for became free: tick now.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct RolloutSlotFreed;

/// The Canary object changed. `conflict` is set when another Canary already targets the same
/// workload: the canary is then treated as invalid (`spec.targetRef.name`) and touches nothing.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct SpecChanged {
    pub canary: Arc<Canary>,
    pub conflict: Option<String>,
}

/// A watched dependency changed: tick now if that can matter (a new revision, or an
/// initialization waiting for the primary), else keep the cadence. Pokes during a running tick
/// are coalesced into at most one check when the tick ends.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct Poke;

/// Stop the actor (its Canary was deleted or the operator shuts down).
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct StopCanary;

// ------------------------------------------------------------------------------------------------
// Writes on the Canary object itself (handled by [`crate::status::CanaryWriter`])
// ------------------------------------------------------------------------------------------------

/// Persist the status a tick decided (one write per tick).
#[derive(Debug, Message)]
#[rtype(result = "Result<Canary, crate::status::StatusError>")]
pub struct WriteCanaryStatus {
    /// The object the tick decided from (its `resourceVersion` guards the write).
    pub canary: Arc<Canary>,
    pub status: Box<flagger_rollout::CanaryStatus>,
}

/// Add or remove the `finalizer.flagger.app` finalizer (`revertOnDeletion`).
#[derive(Debug, Message)]
#[rtype(result = "Result<(), crate::status::StatusError>")]
pub struct SetFinalizer {
    pub canary: Arc<Canary>,
    pub present: bool,
}

/// Record a Kubernetes event on the Canary (reason `Synced`). Best effort.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct RecordEvent {
    pub canary: Arc<Canary>,
    pub event_type: flagger_rollout::EventType,
    pub message: String,
}

pub use crate::metrics::{CheckProviders, RunQueries};
pub use crate::notifier::Notify;
pub use crate::router::{FinalizeRoutes, GetRoutes, ReconcileRoutes, SetRoutes};
pub use crate::webhook::{CallHook, ForwardEvent};
pub use crate::workload::{EnsurePrimary, PromoteToPrimary, RevertTarget, Scale};
