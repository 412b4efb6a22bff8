//! Istio mesh simulation, recorded Istio series, `/metrics` and the Prometheus query API
//! (owner: testbed-mesh helper). Entry points used by `Testbed::start`:
//!
//! ```ignore
//! pub struct MeshConfig { pub rps: u32, pub sample_every: Duration, pub retention: Duration }
//! pub struct Mesh { /* cheap to clone */ }
//! impl Mesh {
//!     pub fn start(store: crate::store::Store, cfg: MeshConfig, shutdown: CancellationToken) -> Mesh;
//!     /// `GET /metrics`, `GET|POST /api/v1/query` (+ whatever else the mesh serves).
//!     pub fn router(&self) -> axum::Router;
//! }
//! ```

pub mod promql;
pub mod tsdb;
