//! CI smoke run of the benchmark (issue 8): 50 canaries with a 2 s interval against the operator
//! binary, to promotion. Asserts counts only (timings are benchmark figures, docs/BENCHMARKS.md):
//! the JSON has exactly the documented keys, every canary promoted, and a steady-state analysis
//! tick makes no GET or LIST request (reads come from the reflector caches).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::Duration;

use flagger_bench::{Options, VERBS, run, table, write_json};
use serde_json::Value;

const KEYS: [&str; 12] = [
    "canaries",
    "interval_s",
    "detection_latency_ms",
    "step_cadence_error_ms",
    "api_requests_per_canary_per_tick",
    "writes_per_weight_step",
    "metric_queries_per_canary_per_step",
    "operator_peak_rss_mb",
    "operator_cpu_seconds",
    "rss_per_canary_kb",
    "init_seconds",
    "promote_all_seconds",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_canaries_promote_without_reads_per_tick() {
    let mut o = Options::new(50, PathBuf::from(env!("CARGO_BIN_EXE_flagger")));
    o.interval = Duration::from_secs(2);
    // A 10 % canary still answers a few requests per 2 s tick, so no tick halts on "no values".
    o.rps = 20;
    // Generous bounds that only catch a hang.
    o.timeout = Duration::from_secs(120);
    let (report, details) = run(&o).await.expect("the benchmark runs");
    print!("{}", table(&report, &details));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.json");
    write_json(&report, &path).unwrap();
    let json: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();

    let mut keys: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    let mut want = KEYS.to_vec();
    want.sort_unstable();
    assert_eq!(keys, want);
    let per_tick = &json["api_requests_per_canary_per_tick"];
    let mut verbs: Vec<&str> = per_tick
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    verbs.sort_unstable();
    let mut want = VERBS.to_vec();
    want.sort_unstable();
    assert_eq!(verbs, want);
    for key in ["detection_latency_ms", "step_cadence_error_ms"] {
        assert!(
            json[key]["p50"].is_number() && json[key]["p99"].is_number(),
            "{key}: {json}"
        );
    }
    assert!(json["detection_latency_ms"]["max"].is_number(), "{json}");

    assert_eq!(json["canaries"], 50);
    assert_eq!(details.promoted, 50, "failed: {:?}", details.failed);
    assert_eq!(details.lagged_events, 0, "the recorder missed store events");
    assert!(details.weight_steps_in_window > 0, "{details:?}");
    assert_eq!(
        (per_tick["GET"].as_f64(), per_tick["LIST"].as_f64()),
        (Some(0.0), Some(0.0)),
        "reads per steady-state tick: {:?}",
        details.requests_per_canary_per_tick
    );
    // Every weight step wrote the VirtualService: the window saw the analysis, not an idle cluster.
    assert!(
        report.api_requests_per_canary_per_tick.patch > 0.0,
        "{json}"
    );
}
