//! The operator's HTTP admin server: `/metrics` (the `flagger_*` series), `/healthz` (the
//! process serves requests) and `/readyz`.
//!
//! `/readyz` answers 503 `not ready` until the caches have synced (and again while shutting
//! down), then 200 with the body `leader` (this process runs the canaries and may write; always
//! so without leader election) or `follower` (caches warm, no canary runs, nothing is written).
//! Followers are ready: they serve `/metrics` and take over without a restart of their caches.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpResponse, HttpServer, web};

use crate::gate::WriteGate;
use crate::telemetry::Telemetry;

/// Set once the operator is ready; `/readyz` answers 503 until then. The role comes from the
/// write gate, so `/readyz` says `leader` exactly while writes are allowed.
#[derive(Clone, Default)]
pub struct Readiness {
    ready: Arc<AtomicBool>,
    gate: WriteGate,
}

impl Readiness {
    pub fn new(gate: WriteGate) -> Self {
        Self {
            ready: Arc::default(),
            gate,
        }
    }
    pub fn set(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }
    pub fn get(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
    /// `leader` or `follower`.
    pub fn role(&self) -> &'static str {
        if self.gate.is_open() {
            "leader"
        } else {
            "follower"
        }
    }
}

#[derive(Clone)]
struct State {
    telemetry: Telemetry,
    readiness: Readiness,
}

async fn metrics(state: web::Data<State>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.telemetry.render())
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().body("OK")
}

async fn readyz(state: web::Data<State>) -> HttpResponse {
    if state.readiness.get() {
        HttpResponse::Ok()
            .content_type("text/plain")
            .body(state.readiness.role())
    } else {
        HttpResponse::ServiceUnavailable().body("not ready")
    }
}

/// A running admin server.
pub struct AdminServer {
    pub address: SocketAddr,
    pub handle: ServerHandle,
}

/// Binds `address` (port 0 picks a free port; see [`AdminServer::address`]) and serves in the
/// background on the current actix system.
pub fn start(
    address: SocketAddr,
    telemetry: Telemetry,
    readiness: Readiness,
) -> std::io::Result<AdminServer> {
    let state = State {
        telemetry,
        readiness,
    };
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(state.clone()))
            .route("/metrics", web::get().to(metrics))
            .route("/healthz", web::get().to(healthz))
            .route("/healthz", web::post().to(healthz))
            .route("/readyz", web::get().to(readyz))
    })
    .workers(1)
    .disable_signals()
    .bind(address)?;
    let bound = server.addrs().first().copied().unwrap_or(address);
    let server = server.run();
    let handle = server.handle();
    actix::spawn(async move {
        if let Err(error) = server.await {
            tracing::error!(msg = "admin server stopped", %error);
        }
    });
    Ok(AdminServer {
        address: bound,
        handle,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use actix_web::test;

    #[actix_web::test]
    async fn endpoints_answer() {
        let telemetry = Telemetry::new("0.1.0", "istio").unwrap();
        telemetry.set_canary_total("test", 2);
        let readiness = Readiness::default();
        let state = State {
            telemetry,
            readiness: readiness.clone(),
        };
        let app = test::init_service(
            App::new()
                .app_data(web::Data::new(state))
                .route("/metrics", web::get().to(metrics))
                .route("/healthz", web::get().to(healthz))
                .route("/readyz", web::get().to(readyz)),
        )
        .await;
        let body =
            test::call_and_read_body(&app, test::TestRequest::get().uri("/metrics").to_request())
                .await;
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(
            text.contains("flagger_canary_total{namespace=\"test\"} 2"),
            "{text}"
        );
        let resp =
            test::call_service(&app, test::TestRequest::get().uri("/readyz").to_request()).await;
        assert_eq!(resp.status(), 503);
        readiness.set(true);
        let resp =
            test::call_service(&app, test::TestRequest::get().uri("/readyz").to_request()).await;
        assert_eq!(resp.status(), 200);
        let body = test::read_body(resp).await;
        // Without leader election this process is always the leader.
        assert_eq!(&body[..], b"leader");
        let resp =
            test::call_service(&app, test::TestRequest::get().uri("/healthz").to_request()).await;
        assert_eq!(resp.status(), 200);
    }
}
