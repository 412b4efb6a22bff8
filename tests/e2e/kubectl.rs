//! The real `kubectl` against the testbed of an end-to-end test (kubeconfig from the testbed).
//!
//! kubectl comes from `$KUBECTL`, `/usr/bin/kubectl` or `PATH` (`scripts/install-deps` installs
//! it); without it the test fails saying so.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::path::PathBuf;
use std::process::{Command, Stdio};

use super::harness::Cluster;

fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("KUBECTL") {
        return PathBuf::from(p);
    }
    let usr = PathBuf::from("/usr/bin/kubectl");
    if usr.exists() {
        return usr;
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("kubectl"))
                .find(|p| p.exists())
        })
        .unwrap_or_else(|| {
            panic!(
                "kubectl is not installed (looked at $KUBECTL, /usr/bin/kubectl and PATH); \
                 run scripts/install-deps"
            )
        })
}

/// What one kubectl run printed.
#[derive(Debug)]
pub struct Output {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `kubectl <args>` against `cluster` on a blocking thread (the testbed serves in-process).
pub async fn kubectl(cluster: &Cluster, args: &[&str]) -> Output {
    let cache = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(binary());
    cmd.arg("--kubeconfig")
        .arg(cluster.kubeconfig.path())
        .arg("--cache-dir")
        .arg(cache.path())
        .args(args)
        .env_remove("KUBECONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("kubectl runs"))
        .await
        .unwrap();
    drop(cache);
    Output {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `kubectl <args>`, which must succeed; returns its stdout.
pub async fn kubectl_ok(cluster: &Cluster, args: &[&str]) -> String {
    let out = kubectl(cluster, args).await;
    assert!(
        out.ok,
        "kubectl {} failed:\n{}\n{}",
        args.join(" "),
        out.stderr,
        out.stdout
    );
    out.stdout
}
