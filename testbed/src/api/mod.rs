//! HTTP API server (owner: testbed-api helper): the Kubernetes REST API over HTTP/1.1 JSON on
//! 127.0.0.1, plus the testbed's own control endpoints.
//!
//! Routes: discovery (`/version`, `/api`, `/apis`, ...) and OpenAPI (`/openapi/v3`) from
//! [`discovery`] and [`openapi`]; `POST|GET /testbed/faults` and `GET /testbed/stats`; every
//! other path goes to the generic resource handler ([`resources`]), which answers
//! `/api/v1/...` and `/apis/<group>/<version>/...` for every type the registry serves and a
//! Kubernetes `Status` 404 for anything else. Errors are always `Status` bodies. Any bearer
//! token is accepted (no authentication or authorization).
pub mod defaults;
pub mod discovery;
pub mod openapi;
pub mod request;
pub mod resources;
pub mod watch;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::{Value, json};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use crate::faults::{FaultConfig, Faults, Stats};
use crate::registry::Registry;
use crate::store::{ApiError, Store};

pub use resources::{MAX_BODY, error_response, json_response};

/// What the API handlers share.
#[derive(Clone)]
pub struct ApiState {
    pub store: Store,
    pub registry: Registry,
    pub faults: Faults,
    pub stats: Stats,
    /// How often watches with `allowWatchBookmarks=true` get a BOOKMARK.
    pub bookmark_interval: Duration,
    /// Ends open watch streams at shutdown.
    pub shutdown: CancellationToken,
}

/// The whole API router.
pub fn router(state: ApiState) -> Router {
    let registry = state.registry.clone();
    Router::new()
        .route("/testbed/faults", post(set_faults).get(get_faults))
        .route("/testbed/stats", get(get_stats))
        .fallback(resources::handle)
        .with_state(state)
        .merge(discovery::routes(registry.clone()))
        .merge(openapi::routes(registry))
}

/// `POST /testbed/faults`: a [`FaultConfig`] (camelCase JSON; omitted fields = no fault), plus
/// optional `"compact": true` to drop the watch history first. Answers the active config.
async fn set_faults(State(st): State<ApiState>, body: bytes::Bytes) -> Response {
    let mut v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return error_response(&ApiError::bad_request(format!("invalid JSON: {e}"))),
    };
    let compact = v
        .as_object_mut()
        .and_then(|m| m.remove("compact"))
        .is_some_and(|c| c == json!(true));
    let cfg: FaultConfig = match serde_json::from_value(v) {
        Ok(c) => c,
        Err(e) => {
            return error_response(&ApiError::bad_request(format!("invalid fault config: {e}")));
        }
    };
    if let Err(e) = st.faults.set(cfg) {
        return error_response(&ApiError::bad_request(e.to_string()));
    }
    if compact {
        st.faults.compact();
    }
    get_faults(State(st)).await
}

async fn get_faults(State(st): State<ApiState>) -> Response {
    json_response(
        StatusCode::OK,
        &serde_json::to_value(st.faults.get()).unwrap_or_default(),
    )
}

async fn get_stats(State(st): State<ApiState>) -> Response {
    json_response(
        StatusCode::OK,
        &serde_json::to_value(st.stats.snapshot()).unwrap_or_default(),
    )
}
