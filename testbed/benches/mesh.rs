//! Cost of the mesh simulation at 1,000 VirtualServices (issue 3, item 4): CPU per simulated
//! second, memory once the 30-minute retention window is full, and the latency of Flagger's
//! builtin queries at that size.
//!
//! `cargo bench -p flagger-testbed --bench mesh` (env `MESH_BENCH_VS`, default 1000, and
//! `MESH_BENCH_SECONDS`, default 1800 = the full default retention).
#![allow(clippy::unwrap_used, clippy::expect_used)]
#[path = "../tests/mesh_support/mod.rs"]
mod mesh_support;

use flagger_testbed::mesh::{Mesh, MeshConfig};
use flagger_testbed::store::Store;
use mesh_support::*;
use serde_json::json;
use std::time::Instant;

const T0: i64 = 1_700_000_000_000;

fn env(name: &str, default: i64) -> i64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Process CPU time (user + system) in seconds, from /proc (Linux).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<f64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    // fields 14 and 15 of the line are the 12th and 13th after the command name
    (f.get(11).unwrap_or(&0.0) + f.get(12).unwrap_or(&0.0)) / 100.0
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

fn main() {
    let n_vs = env("MESH_BENCH_VS", 1000);
    let seconds = env("MESH_BENCH_SECONDS", 1800);
    let store = Store::default();
    ns(&store, "bench");
    for i in 0..n_vs {
        flagger_canary(
            &store,
            "bench",
            &format!("app{i}"),
            90,
            json!({}),
            json!({"testbed.flagger.app/error-rate": "0.1", "testbed.flagger.app/latency-ms": "50"}),
            json!({}),
        );
    }
    let rss_cluster = rss_mib();
    let mesh = Mesh::new(store.clone(), MeshConfig::default());

    let (cpu0, wall0) = (cpu_seconds(), Instant::now());
    mesh.tick(T0 + 1000);
    let first = wall0.elapsed();

    let (cpu0b, wall0b) = (cpu_seconds(), Instant::now());
    for s in 2..=seconds {
        mesh.tick(T0 + s * 1000);
    }
    let steady_cpu = cpu_seconds() - cpu0b;
    let steady_wall = wall0b.elapsed().as_secs_f64();
    let per_tick_cpu_ms = steady_cpu * 1000.0 / (seconds - 1).max(1) as f64;
    let per_tick_wall_ms = steady_wall * 1000.0 / (seconds - 1).max(1) as f64;
    let stats = mesh.stats();
    let rss_full = rss_mib();

    // A weight change on every VirtualService at once (one store event each).
    for i in 0..n_vs {
        let name = format!("app{i}");
        set_weights(
            &store,
            "bench",
            &name,
            &[
                (&format!("{name}-primary"), 50),
                (&format!("{name}-canary"), 50),
            ],
        );
    }
    let w = Instant::now();
    mesh.tick(T0 + (seconds + 1) * 1000);
    let churn_ms = w.elapsed().as_secs_f64() * 1000.0;

    // One pod changes: every endpoint list of its namespace is rebuilt on the next tick.
    store
        .modify(
            &flagger_testbed::store::ResourceId::new("", "pods"),
            "bench",
            "app0-5d4f8b7c9-00000",
            true,
            |p| p["status"]["conditions"][0]["status"] = json!("False"),
        )
        .unwrap();
    let w = Instant::now();
    mesh.tick(T0 + (seconds + 2) * 1000);
    let pod_churn_ms = w.elapsed().as_secs_f64() * 1000.0;

    // Flagger's builtin queries at this size.
    let t = T0 + (seconds + 2) * 1000;
    let q = Instant::now();
    let n_q = 50;
    for i in 0..n_q {
        let target = format!("app{}", i * (n_vs / n_q).max(1));
        mesh.query(&success_rate_query("bench", &target, "1m"), t)
            .unwrap();
        mesh.query(&p99_query("bench", &target, "1m"), t).unwrap();
    }
    let query_ms = q.elapsed().as_secs_f64() * 1000.0 / (2 * n_q) as f64;

    println!("mesh benchmark: {n_vs} VirtualServices, 10 rps each, {seconds} simulated seconds");
    println!("  requests simulated:            {}", stats.requests);
    println!(
        "  first tick (builds caches):    {:.1} ms",
        first.as_secs_f64() * 1000.0
    );
    println!(
        "  CPU per simulated second:      {per_tick_cpu_ms:.2} ms (wall {per_tick_wall_ms:.2} ms)"
    );
    println!("  tick after {n_vs} VS updates:    {churn_ms:.1} ms");
    println!(
        "  tick after 1 pod change:       {pod_churn_ms:.1} ms (the namespace's endpoint lists rebuilt)"
    );
    println!(
        "  series: {}  samples: {}  sample bytes: {:.1} MiB ({:.2} B/sample)",
        stats.series,
        stats.samples,
        stats.sample_bytes as f64 / 1048576.0,
        stats.sample_bytes as f64 / stats.samples.max(1) as f64
    );
    println!(
        "  RSS: {rss_cluster:.0} MiB with the cluster objects, {rss_full:.0} MiB after {seconds} s of samples (+{:.0} MiB)",
        rss_full - rss_cluster
    );
    println!("  Flagger builtin query latency: {query_ms:.2} ms");
    let _ = cpu0;
}
