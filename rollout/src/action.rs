//! What a decision asks the actors to do. Executed **in order**; every action is idempotent (safe
//! to repeat after a crash), because a tick that fails half-way is simply decided again on the
//! next tick from the unchanged `.status`.
//!
//! Execution contract for the actor:
//! - run the actions in order; if one fails, emit a Warning event with the error and stop (do
//!   not run the rest, do not write the status);
//! - [`Action::Event`] and [`Action::Notify`] never fail the sequence (best effort), and every
//!   event is also forwarded to the canary's `event` webhooks / the global event webhook;
//! - [`Action::WriteStatus`] appears at most once per tick, always last.

use serde::{Deserialize, Serialize};

use crate::phase::Phase;
use crate::spec::{HookType, Severity};
use crate::status::CanaryStatus;
use crate::weights::Weights;

/// Kubernetes event type. The reason is always `Synced`, the source `flagger`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventType {
    Normal,
    Warning,
}

/// How to scale the target (canary) Deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Scale {
    /// `spec.replicas = 0` (merge patch).
    ToZero,
    /// Scale from zero: the target's `spec.replicas` if > 0; else (no autoscaler) the primary's
    /// replicas if > 0; else the HPA's `minReplicas` if > 1; else 1. No-op when already > 0.
    Up,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Action {
    /// Create `<t>-primary` from the target if missing — with `-primary` copies of the tracked
    /// ConfigMaps/Secrets and, when `autoscalerRef` is set, the `-primary` HPA. Never modifies an
    /// existing primary (promotion does that).
    EnsurePrimary,
    /// Create or update the Services `<svc>`, `<svc>-primary`, `<svc>-canary`, and the mesh
    /// objects (Istio VirtualService `<svc>`, DestinationRules `<svc>-primary`/`-canary`).
    /// Preserves the current weights and mirror of an existing VirtualService; a new one routes
    /// 100/0.
    ReconcileRoutes,
    /// Scale the target Deployment.
    ScaleCanary(Scale),
    /// Write the weights (and mirror flag) into the mesh object. With A/B testing the weights
    /// apply to the requests matching `analysis.match`; the default route stays on the primary.
    SetWeights { weights: Weights, mirror: bool },
    /// Promotion: copy the tracked ConfigMaps/Secrets to their `-primary` copies, then the target's
    /// pod template to `<t>-primary` (new `flagger-id`), and refresh the primary HPA from the
    /// target's. Idempotent: copying the same template twice changes nothing but the `flagger-id`
    /// annotation, which restarts the primary once more (harmless).
    PromoteToPrimary,
    /// Call every webhook of `hook_type` in spec order with the payload `{name, namespace, phase,
    /// checksum, metadata}`; emit `Post-rollout check <hook> passed` (Normal) or `Post-rollout
    /// hook <hook> failed <err>` (Warning) and stop at the first failure. Results never change
    /// the rollout. Used for `post-rollout`.
    RunHooks {
        hook_type: HookType,
        phase: Phase,
        checksum: String,
    },
    /// Record a Kubernetes event on the Canary (reason `Synced`) and log it (`msg`, `canary`).
    Event {
        event_type: EventType,
        message: String,
    },
    /// Send a chat notification through the canary's alerts (filtered by severity) or the global
    /// notifier. `fields` (Target, Failed checks threshold, ...) go after the optional `Cluster`
    /// field. Fire and forget.
    Notify {
        severity: Severity,
        message: String,
        fields: Vec<(String, String)>,
    },
    /// Deletion with `revertOnDeletion`: give the target its replicas back (the primary's, or the
    /// scale-from-zero rule when the primary is gone).
    RevertTarget,
    /// Deletion with `revertOnDeletion`: point the apex Service back at the target (restore its
    /// selector from kubectl's last-applied annotation, else `<label>: <value>`), and restore the
    /// mesh objects from last-applied or `flagger.kubernetes.io/original-configuration`.
    RevertRoutes,
    /// Remove the `finalizer.flagger.app` finalizer so the Canary can be deleted.
    RemoveFinalizer,
    /// Persist this status (status subresource). Always the last action.
    WriteStatus(Box<CanaryStatus>),
}
