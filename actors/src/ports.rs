//! The bundle of [`Recipient`]s a CanaryActor talks to. A CanaryActor depends on messages, not
//! on concrete actors, so tests put recorders behind any of them.

use actix::{Actor, Addr, Handler, Recipient};

use crate::messages::{
    CallHook, CheckProviders, EnsurePrimary, FinalizeRoutes, ForwardEvent, GetRoutes, Notify,
    PromoteToPrimary, ReconcileRoutes, RecordEvent, RevertTarget, RunQueries, Scale, SetFinalizer,
    SetRoutes, WriteCanaryStatus,
};

/// Everything a CanaryActor sends. Cheap to clone.
#[derive(Clone)]
pub struct Ports {
    pub ensure_primary: Recipient<EnsurePrimary>,
    pub promote: Recipient<PromoteToPrimary>,
    pub scale: Recipient<Scale>,
    pub revert_target: Recipient<RevertTarget>,
    pub reconcile_routes: Recipient<ReconcileRoutes>,
    pub get_routes: Recipient<GetRoutes>,
    pub set_routes: Recipient<SetRoutes>,
    pub finalize_routes: Recipient<FinalizeRoutes>,
    pub run_queries: Recipient<RunQueries>,
    pub check_providers: Recipient<CheckProviders>,
    pub call_hook: Recipient<CallHook>,
    pub forward_event: Recipient<ForwardEvent>,
    pub notify: Recipient<Notify>,
    pub record_event: Recipient<RecordEvent>,
    pub write_status: Recipient<WriteCanaryStatus>,
    pub set_finalizer: Recipient<SetFinalizer>,
}

impl Ports {
    /// Wires the ports to the shared actors.
    pub fn new<W, R, M, H, N, C>(
        workload: &Addr<W>,
        router: &Addr<R>,
        metrics: &Addr<M>,
        webhook: &Addr<H>,
        notifier: &Addr<N>,
        canary_writer: &Addr<C>,
    ) -> Self
    where
        W: Actor
            + Handler<EnsurePrimary>
            + Handler<PromoteToPrimary>
            + Handler<Scale>
            + Handler<RevertTarget>,
        W::Context: actix::dev::ToEnvelope<W, EnsurePrimary>
            + actix::dev::ToEnvelope<W, PromoteToPrimary>
            + actix::dev::ToEnvelope<W, Scale>
            + actix::dev::ToEnvelope<W, RevertTarget>,
        R: Actor
            + Handler<ReconcileRoutes>
            + Handler<GetRoutes>
            + Handler<SetRoutes>
            + Handler<FinalizeRoutes>,
        R::Context: actix::dev::ToEnvelope<R, ReconcileRoutes>
            + actix::dev::ToEnvelope<R, GetRoutes>
            + actix::dev::ToEnvelope<R, SetRoutes>
            + actix::dev::ToEnvelope<R, FinalizeRoutes>,
        M: Actor + Handler<RunQueries> + Handler<CheckProviders>,
        M::Context:
            actix::dev::ToEnvelope<M, RunQueries> + actix::dev::ToEnvelope<M, CheckProviders>,
        H: Actor + Handler<CallHook> + Handler<ForwardEvent>,
        H::Context: actix::dev::ToEnvelope<H, CallHook> + actix::dev::ToEnvelope<H, ForwardEvent>,
        N: Actor + Handler<Notify>,
        N::Context: actix::dev::ToEnvelope<N, Notify>,
        C: Actor + Handler<RecordEvent> + Handler<WriteCanaryStatus> + Handler<SetFinalizer>,
        C::Context: actix::dev::ToEnvelope<C, RecordEvent>
            + actix::dev::ToEnvelope<C, WriteCanaryStatus>
            + actix::dev::ToEnvelope<C, SetFinalizer>,
    {
        Self {
            ensure_primary: workload.clone().recipient(),
            promote: workload.clone().recipient(),
            scale: workload.clone().recipient(),
            revert_target: workload.clone().recipient(),
            reconcile_routes: router.clone().recipient(),
            get_routes: router.clone().recipient(),
            set_routes: router.clone().recipient(),
            finalize_routes: router.clone().recipient(),
            run_queries: metrics.clone().recipient(),
            check_providers: metrics.clone().recipient(),
            call_hook: webhook.clone().recipient(),
            forward_event: webhook.clone().recipient(),
            notify: notifier.clone().recipient(),
            record_event: canary_writer.clone().recipient(),
            write_status: canary_writer.clone().recipient(),
            set_finalizer: canary_writer.clone().recipient(),
        }
    }
}
