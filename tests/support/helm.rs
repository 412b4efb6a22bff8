//! Helm from the tests: render a chart, split the output into documents, validate them with
//! kubernetes-validate, read RBAC rules. Needs `helm` and `kubernetes-validate`
//! (scripts/install-deps).
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// `charts/<name>` of this repository.
pub fn chart(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("charts")
        .join(name)
}

/// Runs a program to completion: (success, stdout, stderr).
pub fn run(program: &str, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run {program}: {e}; run scripts/install-deps to install it")
        });
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `helm template <name> charts/<name> --namespace istio-system <args>`; panics with helm's
/// message on failure.
pub fn render(name: &str, args: &[&str]) -> String {
    let path = chart(name);
    let path = path.to_str().unwrap();
    let mut all = vec!["template", name, path, "--namespace", "istio-system"];
    all.extend_from_slice(args);
    template(&all[1..])
}

/// `helm template <args>`; panics with helm's message on failure.
pub fn template(args: &[&str]) -> String {
    let mut all = vec!["template"];
    all.extend_from_slice(args);
    let (ok, out, err) = run("helm", &all, None);
    assert!(ok, "helm {all:?} failed: {err}");
    out
}

/// Rendered documents as JSON values (empty documents dropped).
pub fn documents(yaml: &str) -> Vec<Value> {
    yaml.split("\n---")
        .filter(|doc| {
            doc.lines()
                .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        })
        .map(|doc| serde_saphyr::from_str::<Value>(doc).unwrap_or_else(|e| panic!("{e}: {doc}")))
        .filter(|v| !v.is_null())
        .collect()
}

/// kubernetes-validate knows built-in kinds only; the Prometheus-operator monitors are checked here.
pub fn check_monitor(doc: &Value) {
    assert_eq!(doc["apiVersion"], "monitoring.coreos.com/v1");
    let endpoints = doc["spec"]["podMetricsEndpoints"]
        .as_array()
        .or_else(|| doc["spec"]["endpoints"].as_array())
        .expect("monitor endpoints");
    assert_eq!(endpoints[0]["path"], "/metrics");
    assert_eq!(endpoints[0]["port"], "http");
    assert!(doc["spec"]["selector"]["matchLabels"].is_object());
}

/// Validates rendered manifests with `kubernetes-validate --strict` (monitors structurally).
pub fn validate(label: &str, yaml: &str) {
    let mut builtin = String::new();
    for doc in documents(yaml) {
        match doc["kind"].as_str() {
            Some("PodMonitor" | "ServiceMonitor") => check_monitor(&doc),
            _ => {
                builtin.push_str("---\n");
                builtin.push_str(&serde_json::to_string(&doc).unwrap());
                builtin.push('\n');
            }
        }
    }
    let (ok, out, err) = run("kubernetes-validate", &["--strict", "-"], Some(&builtin));
    assert!(ok, "{label}: kubernetes-validate failed:\n{out}\n{err}");
    assert!(
        !out.contains("ERROR") && !err.contains("ERROR"),
        "{label}:\n{out}\n{err}"
    );
    assert!(
        !out.contains("Couldn't find schema") && !err.contains("Couldn't find schema"),
        "{label}: a document was not validated:\n{out}\n{err}"
    );
}

/// The rules of every ClusterRole and Role, with the kind they belong to.
pub fn rbac_rules(yaml: &str) -> Vec<(String, Value)> {
    documents(yaml)
        .into_iter()
        .filter(|d| matches!(d["kind"].as_str(), Some("ClusterRole" | "Role")))
        .flat_map(|d| {
            let kind = d["kind"].as_str().unwrap().to_string();
            d["rules"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(move |r| (kind.clone(), r))
        })
        .collect()
}
