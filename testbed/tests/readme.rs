//! The README's "run the simulated cluster on its own" block, run as written: the testbed binary
//! with the words `cargo run -p flagger-testbed --` passes it (the kubeconfig path moved to a
//! temporary directory), then the block's kubectl command against it. It lives in this package so
//! that `CARGO_BIN_EXE_flagger-testbed` is the binary `cargo run -p flagger-testbed` builds.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../tests/support/readme.rs"]
mod readme;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Kills the served cluster however the test ends.
struct Served(Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_readme_testbed_block_serves_a_cluster_that_kubectl_lists_namespaces_of() {
    let markdown = readme::readme();
    let block = readme::code_blocks(&markdown)
        .into_iter()
        .find(|b| b.text.contains(concat!("-p ", env!("CARGO_PKG_NAME"))))
        .expect("README.md has a `cargo run -p flagger-testbed` block");
    let commands = readme::commands(&block);
    assert_eq!(commands.len(), 2, "expected serve + kubectl: {commands:?}");
    let (serve, kubectl) = (&commands[0], &commands[1]);
    assert_eq!(
        serve[..4],
        ["cargo", "run", "-p", env!("CARGO_PKG_NAME")],
        "{serve:?}"
    );
    let mut args = readme::cargo_run_args(serve).expect("`cargo run ... -- <args>`");
    let out = args
        .iter()
        .position(|a| a == "--kubeconfig-out")
        .expect("the block writes a kubeconfig");
    let documented = args[out + 1].clone();
    assert!(
        kubectl.contains(&documented),
        "kubectl does not use the kubeconfig the testbed writes: {kubectl:?}"
    );
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("testbed.kubeconfig");
    let kubeconfig = kubeconfig.to_str().unwrap();
    args[out + 1] = kubeconfig.to_owned();

    let mut served = Served(
        Command::new(env!("CARGO_BIN_EXE_flagger-testbed"))
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // The first stdout line (`api: http://127.0.0.1:PORT`) comes once it serves.
    let (tx, rx) = mpsc::channel();
    let stdout = served.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let api = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the testbed printed no `api:` line within 30 s");
    assert!(api.starts_with("api: http://127.0.0.1:"), "{api}");

    let words: Vec<String> = kubectl
        .iter()
        .map(|w| w.replace(&documented, kubeconfig))
        .collect();
    assert_eq!(words[0], "kubectl");
    let output = Command::new(&words[0])
        .args(&words[1..])
        .output()
        .expect("kubectl runs (scripts/install-deps installs it)");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{words:?} failed:\n{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    assert_eq!(header, ["NAME", "STATUS", "AGE"], "{text}");
    let names: Vec<&str> = lines
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .inspect(|cols| assert_eq!(cols.get(1), Some(&"Active"), "{text}"))
        .map(|cols| cols[0])
        .collect();
    for expected in ["default", "kube-system"] {
        assert!(
            names.contains(&expected),
            "no {expected} namespace:\n{text}"
        );
    }
}
