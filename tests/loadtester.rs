//! The `flagger-loadtester` binary over HTTP on 127.0.0.1.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "e2e/loadtester.rs"]
mod loadtester;

use std::path::Path;
use std::time::{Duration, Instant};

use loadtester::LoadTester as Tester;
use serde_json::{Value, json};

fn payload(metadata: Value) -> Value {
    json!({"name": "podinfo", "namespace": "test", "phase": "Progressing",
           "checksum": "abc", "type": "rollout", "metadata": metadata})
}

const PODINFO: &str = r#"{"name": "podinfo", "namespace": "test"}"#;

async fn wait_for_file(path: &Path, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if pred(&text) {
            return text;
        }
        assert!(Instant::now() < deadline, "file {path:?} is {text:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn gates_follow_upstream_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("gates.json");
    let state_arg = state.to_str().unwrap();
    let t = Tester::start(&["--gate-state", state_arg]);
    let podinfo: Value = serde_json::from_str(PODINFO).unwrap();
    assert_eq!(t.post("/healthz", json!({})).await, (200, "OK".into()));
    assert_eq!(t.post("/gate/approve", json!({})).await, (200, "OK".into()));
    assert_eq!(
        t.post("/gate/halt", json!({})).await,
        (403, "Forbidden".into())
    );
    assert_eq!(
        t.post("/gate/check", payload(json!({}))).await,
        (403, "Forbidden".into())
    );
    assert_eq!(t.post("/gate/open", podinfo.clone()).await.0, 202);
    assert_eq!(
        t.post("/gate/check", payload(json!({}))).await,
        (200, "Approved".into())
    );
    // Another canary's gate is separate.
    let other = json!({"name": "backend", "namespace": "test"});
    assert_eq!(t.post("/gate/check", other).await.0, 403);
    // Rollback gates are separate keys.
    assert_eq!(t.post("/rollback/check", podinfo.clone()).await.0, 403);
    assert_eq!(t.post("/rollback/open", podinfo.clone()).await.0, 202);
    assert_eq!(
        t.post("/rollback/check", podinfo.clone()).await,
        (200, "Approved".into())
    );
    assert_eq!(t.post("/gate/check", payload(json!({}))).await.0, 200);
    assert_eq!(t.post("/gate/check", json!("garbage")).await.0, 400);
    drop(t);

    let on_disk: Value = serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    assert_eq!(
        on_disk,
        json!({"podinfo.test": true, "rollback.podinfo.test": true})
    );
    let t = Tester::start(&["--gate-state", state_arg]);
    assert_eq!(
        t.post("/gate/check", podinfo.clone()).await,
        (200, "Approved".into())
    );
    assert_eq!(t.post("/rollback/close", podinfo.clone()).await.0, 202);
    assert_eq!(t.post("/gate/close", podinfo.clone()).await.0, 202);
    assert_eq!(t.post("/gate/check", podinfo.clone()).await.0, 403);
    drop(t);
    let t = Tester::start(&["--gate-state", state_arg]);
    assert_eq!(t.post("/gate/check", podinfo.clone()).await.0, 403);
    assert_eq!(t.post("/rollback/check", podinfo).await.0, 403);
}

#[tokio::test]
async fn background_commands_run_once_while_running() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("runs");
    let cmd = format!("sleep 0.5; echo run >> {}", out.display());
    let t = Tester::start(&[]);
    let started = Instant::now();
    for _ in 0..3 {
        let (status, _) = t.post("/", payload(json!({"cmd": cmd}))).await;
        assert_eq!(status, 202);
    }
    assert!(
        started.elapsed() < Duration::from_millis(400),
        "background commands return at once"
    );
    wait_for_file(&out, |s| s.lines().count() >= 1).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "run\n",
        "deduplicated"
    );
    // Once finished, the same command runs again.
    assert_eq!(t.post("/", payload(json!({"cmd": cmd}))).await.0, 202);
    wait_for_file(&out, |s| s.lines().count() == 2).await;
}

#[tokio::test]
async fn blocking_commands_report_output_failure_and_timeout() {
    let t = Tester::start(&[]);
    assert_eq!(
        t.post(
            "/",
            payload(json!({"cmd": "echo hello", "blocking": "true", "returnCmdOutput": "true"}))
        )
        .await,
        (200, "hello\n".into())
    );
    let (status, text) = t
        .post(
            "/",
            payload(json!({"type": "bash", "cmd": "echo oops >&2; exit 3"})),
        )
        .await;
    assert_eq!(status, 500);
    assert!(
        text.contains("exit status: 3") && text.contains("oops"),
        "{text}"
    );
    let started = Instant::now();
    let (status, text) = t
        .post(
            "/",
            payload(json!({"cmd": "sleep 20", "blocking": "true", "timeout": "300ms"})),
        )
        .await;
    assert_eq!(status, 500);
    assert_eq!(text, "command sleep 20 timed out after 300ms");
    assert!(started.elapsed() < Duration::from_secs(5));

    assert_eq!(
        t.post("/", payload(json!({}))).await,
        (400, "metadata not found in payload".into())
    );
    assert_eq!(
        t.post("/", payload(json!({"type": "ngrinder", "cmd": "x"})))
            .await,
        (
            400,
            "unknown task type ngrinder, supported: cmd, bash".into()
        )
    );
    assert_eq!(t.post("/", json!([1, 2])).await.0, 400);
}

#[tokio::test]
async fn commands_never_exceed_max_concurrent() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let t = Tester::start(&["--max-concurrent", "1"]);
    for i in 0..3 {
        let cmd = format!(
            "echo start{i} >> {0}; sleep 0.3; echo end{i} >> {0}",
            log.display()
        );
        assert_eq!(t.post("/", payload(json!({"cmd": cmd}))).await.0, 202);
    }
    let text = wait_for_file(&log, |s| s.lines().count() == 6).await;
    let lines: Vec<&str> = text.lines().collect();
    for pair in lines.chunks(2) {
        assert!(
            pair[0].starts_with("start") && pair[1] == pair[0].replace("start", "end"),
            "commands overlapped: {lines:?}"
        );
    }
}

#[tokio::test]
async fn the_seed_hey_command_runs_against_a_loopback_url() {
    assert!(Path::new("/usr/bin/hey").exists(), "hey must be installed");
    let t = Tester::start(&[]);
    let cmd = format!("hey -z 1s -q 10 -c 2 {}/healthz", t.url);
    let (status, out) = t
        .post(
            "/",
            payload(json!({"cmd": cmd, "blocking": "true", "returnCmdOutput": "true"})),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    assert!(out.contains("Summary:"), "{out}");
    assert!(out.contains("[200]"), "hey got 200s from /healthz: {out}");
}
