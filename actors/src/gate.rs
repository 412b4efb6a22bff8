//! Writes only while leader: the [`WriteGate`] and the kube client layer that enforces it.
//!
//! Contract:
//! - Every request that can change the cluster (any method but GET, HEAD and OPTIONS) made through a
//!   client built by [`gated_client`] is checked against the gate at the moment it is issued; while
//!   this process is not the leader it fails with [`LeaderError::NotLeader`] without reaching the
//!   API server. Reads (GET, LIST, WATCH) always pass, so followers keep their caches warm.
//! - The check is [`LeaderHandle::is_leader`]: true only until the renew deadline of the last
//!   successful renewal, which is earlier than any other replica may consider the lease expired.
//! - Without leader election ([`WriteGate::open`]) every request passes.
//!
//! The gate lives in the client rather than in each actor so that every write path — the
//! WorkloadActor, the RouterActor, the CanaryWriter (status, finalizer) and the event recorder,
//! and any added later — is checked at the last possible instant, after its own reads, retries and
//! conflict loops, with no way to forget it. The leader elector itself uses an ungated client.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use ::http::{Method, Request};
use kube::Client;
use kube::client::ClientBuilder;
use tower::{BoxError, Layer, Service};

use crate::leader::{LeaderError, LeaderHandle};

/// Whether this process may write now. Cheap to clone and to check.
#[derive(Clone, Default)]
pub struct WriteGate(Option<LeaderHandle>);

impl WriteGate {
    /// No leader election: always open.
    pub fn open() -> Self {
        Self(None)
    }

    /// Open exactly while `handle` holds the lease.
    pub fn leader(handle: LeaderHandle) -> Self {
        Self(Some(handle))
    }

    /// True while writes are allowed.
    pub fn is_open(&self) -> bool {
        self.0.as_ref().is_none_or(LeaderHandle::is_leader)
    }

    /// `Ok` while writes are allowed; the error names the current leader.
    pub fn check(&self) -> Result<(), LeaderError> {
        match &self.0 {
            None => Ok(()),
            Some(handle) => handle.guard(),
        }
    }

    /// Whether this gate follows a leader election (false: [`WriteGate::open`]).
    pub fn is_elected(&self) -> bool {
        self.0.is_some()
    }
}

impl std::fmt::Debug for WriteGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            None => f.write_str("WriteGate(open)"),
            Some(h) => write!(f, "WriteGate(leader={})", h.is_leader()),
        }
    }
}

/// Methods that never change anything.
fn is_read(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The tower layer of [`gated_client`].
#[derive(Clone)]
pub struct WriteGateLayer(pub WriteGate);

impl<S> Layer<S> for WriteGateLayer {
    type Service = Gated<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Gated {
            inner,
            gate: self.0.clone(),
        }
    }
}

/// A service that refuses writes while the gate is closed.
#[derive(Clone)]
pub struct Gated<S> {
    inner: S,
    gate: WriteGate,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> Service<Request<B>> for Gated<S>
where
    S: Service<Request<B>>,
    S::Response: Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxFuture<Result<S::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if !is_read(request.method())
            && let Err(refused) = self.gate.check()
        {
            tracing::debug!(
                msg = "write refused: not the leader",
                method = %request.method(),
                path = request.uri().path()
            );
            return Box::pin(std::future::ready(Err(BoxError::from(refused))));
        }
        let response = self.inner.call(request);
        Box::pin(async move { response.await.map_err(Into::into) })
    }
}

/// A kube client whose writes pass only while `gate` is open.
pub fn gated_client(config: kube::Config, gate: WriteGate) -> Result<Client, kube::Error> {
    Ok(ClientBuilder::try_from(config)?
        .with_layer(&WriteGateLayer(gate))
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_safe_methods_are_reads() {
        for m in [Method::GET, Method::HEAD, Method::OPTIONS] {
            assert!(is_read(&m), "{m}");
        }
        for m in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            assert!(!is_read(&m), "{m}");
        }
    }

    #[test]
    fn an_open_gate_allows_everything() {
        let gate = WriteGate::open();
        assert!(gate.is_open());
        assert!(gate.check().is_ok());
        assert!(!gate.is_elected());
    }
}
