//! HTTP API server (owner: testbed-api helper).
