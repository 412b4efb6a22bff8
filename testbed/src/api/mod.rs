//! HTTP API server (owner: testbed-api helper).
pub mod discovery;
pub mod openapi;
