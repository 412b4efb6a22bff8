//! Executing a [`Decision`]'s actions through the ports.
//!
//! Contract (flagger-rollout `action` module):
//! - actions run in order; the first one that fails emits a Warning event with its error and ends
//!   the sequence (nothing after it runs, the status is not written);
//! - a conflict on a guarded write of the Canary (status, finalizer: someone changed the object
//!   since the tick read it) also ends the sequence, but quietly: a debug log, no event; the
//!   caller decides again from the fresh object ([`Executed::conflict`]);
//! - `Event` and `Notify` never fail the sequence (an alert whose AlertProvider is missing or
//!   unusable is skipped with a Warning event naming the provider and the field); every event
//!   is logged (`msg`, in the canary's span), recorded on the Canary and forwarded to the event
//!   webhooks;
//! - `RunHooks` (post-rollout) emits `Post-rollout check <hook> passed` / `Post-rollout hook
//!   <hook> failed <err>` itself and never fails the sequence;
//! - `WriteStatus` is the last action; its result is returned so the actor caches what was
//!   persisted.

use std::sync::Arc;

use flagger_rollout::{Action, CanarySpec, CanaryStatus, Decision, EventType, HookResult, Phase};
use tracing::{debug, info, warn};

use crate::cache::Caches;
use crate::canary::gather::{alert_routes, run_hooks};
use crate::crd::Canary;
use crate::key::CanaryKey;
use crate::kubeops::CanaryRef;
use crate::messages::{
    EnsurePrimary, FinalizeRoutes, ForwardEvent, Notify, PromoteToPrimary, ReconcileRoutes,
    RecordEvent, RevertTarget, Scale, SetFinalizer, SetRoutes, WriteCanaryStatus,
};
use crate::ports::Ports;
use crate::status::StatusError;

/// The Canary changed concurrently: nothing more was executed and the status was not written.
#[derive(Debug)]
pub struct Conflict {
    /// The object as re-read after the conflict, when the writer read it.
    pub fresh: Option<Canary>,
}

/// Why an action ended the sequence.
enum Stop {
    Failed(String),
    Conflict(Option<Box<Canary>>),
}

impl From<String> for Stop {
    fn from(error: String) -> Self {
        Stop::Failed(error)
    }
}

impl From<StatusError> for Stop {
    fn from(error: StatusError) -> Self {
        match error {
            StatusError::Stale { fresh, .. } => Stop::Conflict(fresh),
            other => Stop::Failed(other.to_string()),
        }
    }
}

/// What executing a decision did.
#[derive(Debug, Default)]
pub struct Executed {
    /// The Canary as written by `WriteStatus` (absent when not written).
    pub written: Option<Canary>,
    /// The error of the action that stopped the sequence.
    pub failed: Option<String>,
    /// A guarded write of the Canary conflicted (not a failure: decide again, quietly).
    pub conflict: Option<Conflict>,
    /// The target or primary Deployment was written (scale, promotion): the next tick reads them
    /// fresh instead of from a cache that may not have seen the write yet.
    pub wrote_workloads: bool,
    /// Weights written by `SetWeights`.
    pub weights: Option<flagger_rollout::Weights>,
}

/// Everything executing needs about the canary.
pub struct Target<'a> {
    pub key: &'a CanaryKey,
    pub canary: &'a Arc<Canary>,
    pub spec: &'a CanarySpec,
    /// Absent when the target could not be read (then decide emits no workload/route action).
    pub canary_ref: Option<&'a Arc<CanaryRef>>,
    /// Phase and revision sent with event webhooks and notifications.
    pub phase: Phase,
    pub checksum: &'a str,
    /// [`Notify::occurrence`] of this tick's notifications ([`notification_occurrence`]).
    pub occurrence: &'a str,
}

/// The occurrence key of a tick's notifications: the revision and the status the tick started
/// from. A tick retried after its status write failed starts from the same status (one
/// notification); a later run of the same revision starts from a newer status (notifies again).
pub fn notification_occurrence(checksum: &str, prev: &CanaryStatus) -> String {
    let since = prev.last_transition_time.map_or(0, |t| t.0);
    format!("{checksum}@{}@{since}", prev.phase)
}

/// Records one event: log line, Kubernetes event, event webhooks. Never fails.
pub fn emit_event(ports: &Ports, t: &Target<'_>, event_type: EventType, message: &str) {
    match event_type {
        EventType::Normal => info!(msg = %message),
        // Upstream logs Warning events at info level too; warn makes them stand out.
        EventType::Warning => warn!(msg = %message),
    }
    ports.record_event.do_send(RecordEvent {
        canary: t.canary.clone(),
        event_type,
        message: message.to_owned(),
    });
    ports.forward_event.do_send(ForwardEvent {
        canary: t.key.clone(),
        hooks: t
            .spec
            .analysis
            .hooks(flagger_rollout::HookType::Event)
            .cloned()
            .collect(),
        phase: t.phase,
        checksum: t.checksum.to_owned(),
        event_type,
        message: message.to_owned(),
        timestamp_ms: jiff::Timestamp::now().as_millisecond(),
    });
}

/// Runs `decision.actions` in order. See the module docs.
pub async fn execute(
    ports: &Ports,
    caches: &Caches,
    t: &Target<'_>,
    decision: &Decision,
) -> Executed {
    let mut done = Executed::default();
    for action in &decision.actions {
        match execute_one(ports, caches, t, action, &mut done).await {
            Ok(()) => {}
            Err(Stop::Failed(error)) => {
                emit_event(ports, t, EventType::Warning, &error);
                done.failed = Some(error);
                break;
            }
            Err(Stop::Conflict(fresh)) => {
                debug!(msg = "the canary changed concurrently; deciding again", canary = %t.key);
                done.conflict = Some(Conflict {
                    fresh: fresh.map(|c| *c),
                });
                break;
            }
        }
    }
    done
}

fn need_ref(t: &Target<'_>) -> Result<Arc<CanaryRef>, String> {
    t.canary_ref
        .cloned()
        .ok_or_else(|| format!("canary {} has no readable target", t.key))
}

async fn execute_one(
    ports: &Ports,
    caches: &Caches,
    t: &Target<'_>,
    action: &Action,
    done: &mut Executed,
) -> Result<(), Stop> {
    let mailbox = |e: actix::MailboxError| format!("actor unavailable: {e}");
    match action {
        Action::EnsurePrimary => {
            let canary = need_ref(t)?;
            ports
                .ensure_primary
                .send(EnsurePrimary { canary })
                .await
                .map_err(mailbox)?
                .map_err(|e| Stop::Failed(e.to_string()))
        }
        Action::ReconcileRoutes => {
            let canary = need_ref(t)?;
            ports
                .reconcile_routes
                .send(ReconcileRoutes { canary })
                .await
                .map_err(mailbox)?
                .map_err(|e| Stop::Failed(e.to_string()))
        }
        Action::ScaleCanary(to) => {
            let canary = need_ref(t)?;
            ports
                .scale
                .send(Scale { canary, to: *to })
                .await
                .map_err(mailbox)?
                .map_err(|e| e.to_string())?;
            done.wrote_workloads = true;
            Ok(())
        }
        Action::SetWeights { weights, mirror } => {
            let canary = need_ref(t)?;
            ports
                .set_routes
                .send(SetRoutes {
                    canary,
                    weights: *weights,
                    mirror: *mirror,
                })
                .await
                .map_err(mailbox)?
                .map_err(|e| e.to_string())?;
            done.weights = Some(*weights);
            Ok(())
        }
        Action::PromoteToPrimary => {
            let canary = need_ref(t)?;
            // Marked before the call: a timeout may still have written the primary.
            done.wrote_workloads = true;
            ports
                .promote
                .send(PromoteToPrimary { canary })
                .await
                .map_err(mailbox)?
                .map_err(|e| Stop::Failed(e.to_string()))
        }
        Action::RunHooks {
            hook_type,
            phase,
            checksum,
        } => {
            for outcome in run_hooks(ports, t.key, t.spec, *hook_type, *phase, checksum).await {
                match &outcome.result {
                    HookResult::Passed => emit_event(
                        ports,
                        t,
                        EventType::Normal,
                        &format!("Post-rollout check {} passed", outcome.name),
                    ),
                    HookResult::Failed(why) => emit_event(
                        ports,
                        t,
                        EventType::Warning,
                        &format!("Post-rollout hook {} failed {why}", outcome.name),
                    ),
                }
            }
            Ok(())
        }
        Action::Event {
            event_type,
            message,
        } => {
            emit_event(ports, t, *event_type, message);
            Ok(())
        }
        Action::Notify {
            severity,
            message,
            fields,
        } => {
            // A missing or unusable alert provider never stops a rollout; the user hears of it.
            let (alerts, problems) = alert_routes(caches, t.spec);
            for problem in &problems {
                emit_event(ports, t, EventType::Warning, problem);
            }
            ports.notify.do_send(Notify {
                canary: t.key.clone(),
                occurrence: t.occurrence.to_owned(),
                severity: *severity,
                message: message.clone(),
                fields: fields.clone(),
                alerts,
            });
            Ok(())
        }
        Action::RevertTarget => {
            let canary = need_ref(t)?;
            ports
                .revert_target
                .send(RevertTarget { canary })
                .await
                .map_err(mailbox)?
                .map_err(|e| Stop::Failed(e.to_string()))
        }
        Action::RevertRoutes => {
            let canary = need_ref(t)?;
            ports
                .finalize_routes
                .send(FinalizeRoutes { canary })
                .await
                .map_err(mailbox)?
                .map_err(|e| Stop::Failed(e.to_string()))
        }
        Action::RemoveFinalizer => Ok(ports
            .set_finalizer
            .send(SetFinalizer {
                canary: t.canary.clone(),
                present: false,
            })
            .await
            .map_err(mailbox)??),
        Action::WriteStatus(status) => {
            let written = ports
                .write_status
                .send(WriteCanaryStatus {
                    canary: t.canary.clone(),
                    status: status.clone(),
                })
                .await
                .map_err(mailbox)??;
            done.written = Some(written);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flagger_rollout::Timestamp;

    fn status(phase: Phase, at_ms: i64) -> CanaryStatus {
        CanaryStatus {
            phase,
            last_transition_time: Some(Timestamp(at_ms)),
            ..CanaryStatus::default()
        }
    }

    #[test]
    fn a_retried_transition_is_one_occurrence_a_later_release_of_the_revision_another() {
        // v2 released, promoted; v1 released back; v2 released again: its "New revision"
        // notification must be sent again.
        let first = notification_occurrence("v2", &status(Phase::Initialized, 1_000));
        let retried = notification_occurrence("v2", &status(Phase::Initialized, 1_000));
        let again = notification_occurrence("v2", &status(Phase::Succeeded, 90_000));
        assert_eq!(first, retried);
        assert_ne!(first, again);
        assert_ne!(
            first,
            notification_occurrence("v3", &status(Phase::Initialized, 1_000))
        );
    }
}
