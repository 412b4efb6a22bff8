//! CI smoke test of `flagger demo`, run exactly as README.md says (the words after `cargo run
//! ... --`): it exits 0 after a promotion then a rollback, shows the live view as timestamped
//! lines (stdout is a pipe), the final `kubectl get canaries -A` table and the events of
//! `kubectl describe canary`, and the kubectl command it prints works while it runs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/readme.rs"]
mod readme;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Generous: the demo takes about 70 s in a debug build; this catches hangs.
const LIMIT: Duration = Duration::from_secs(180);

fn readme_demo_args() -> Vec<String> {
    let markdown = readme::readme();
    readme::code_blocks(&markdown)
        .iter()
        .flat_map(readme::commands)
        .filter_map(|c| readme::cargo_run_args(&c))
        .find(|args| args.first().map(String::as_str) == Some("demo"))
        .expect("README.md has a `cargo run ... -- demo` command")
}

#[test]
fn the_readme_demo_promotes_then_rolls_back_and_exits_zero() {
    let args = readme_demo_args();
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_flagger"))
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, lines) = mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut output = Vec::new();
    let mut kubectl_checked = false;
    loop {
        let left = LIMIT.saturating_sub(started.elapsed());
        match lines.recv_timeout(left) {
            Ok(line) => {
                // The command the demo suggests for another terminal, run while it runs.
                if !kubectl_checked
                    && let Some(cmd) = line.trim().strip_suffix(" get canaries -A --watch")
                    && let Some(kubeconfig) = cmd.strip_prefix("kubectl --kubeconfig ")
                {
                    let out = Command::new("kubectl")
                        .args(["--kubeconfig", kubeconfig, "get", "canaries", "-A"])
                        .output()
                        .expect("kubectl runs (scripts/install-deps installs it)");
                    let text = String::from_utf8_lossy(&out.stdout);
                    assert!(
                        out.status.success() && text.contains("podinfo"),
                        "kubectl against the demo's cluster: {text}{}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                    kubectl_checked = true;
                }
                output.push(line);
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                panic!(
                    "flagger demo still running after {LIMIT:?}:\n{}",
                    output.join("\n")
                );
            }
        }
    }
    let status = child.wait().unwrap();
    let took = started.elapsed();
    let text = output.join("\n");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    eprintln!(
        "flagger {} took {:.1} s",
        args.join(" "),
        took.as_secs_f64()
    );
    assert!(
        status.success(),
        "flagger demo failed ({status}):\n{text}\n{stderr}"
    );
    assert!(kubectl_checked, "no kubectl command printed:\n{text}");

    let position = |needle: &str| {
        output
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("`{needle}` not in the demo's output:\n{text}"))
    };
    // The story, in order.
    let order = [
        "Initialization done! podinfo.test",
        "New revision detected! Scaling up podinfo.test",
        "Advance podinfo.test canary weight 50",
        "Promotion completed! Scaling down podinfo.test",
        "✓ Promoted: podinfo-primary now runs quay.io/stefanprodan/podinfo:1.4.1",
        "Halt podinfo.test advancement success rate",
        "Rolling back podinfo.test failed checks threshold reached 5",
        "✓ Rolled back after",
        "$ kubectl get canaries -A",
        "Events:",
        "✓ Promotion, then rollback",
    ]
    .map(position);
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "out of order ({order:?}):\n{text}"
    );
    // Plain mode: timestamped lines with the weight and the failed checks.
    let live = output
        .iter()
        .find(|l| l.contains("release 1/2") && l.contains("weight 25%/50%"))
        .unwrap_or_else(|| panic!("no live line at weight 25:\n{text}"));
    assert!(
        live.as_bytes()[..12]
            .iter()
            .enumerate()
            .all(|(i, b)| if [2, 5].contains(&i) {
                *b == b':'
            } else if i == 8 {
                *b == b'.'
            } else {
                b.is_ascii_digit()
            }),
        "not timestamped: {live}"
    );
    assert!(live.contains("failed checks 0/5"), "{live}");
    // The table as kubectl prints it.
    let table = position("$ kubectl get canaries -A");
    let header: Vec<&str> = output[table + 1].split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAMESPACE",
            "NAME",
            "STATUS",
            "WEIGHT",
            "LASTTRANSITIONTIME"
        ]
    );
    let row: Vec<&str> = output[table + 2].split_whitespace().collect();
    assert_eq!(row[..4], ["test", "podinfo", "Failed", "0"], "{text}");
    // describe's event list ends with the rollback.
    let events = position("Events:");
    assert!(
        output[events + 1]
            .split_whitespace()
            .eq(["Type", "Reason", "Age", "From", "Message"])
    );
    let describe: Vec<&String> = output[events..]
        .iter()
        .take_while(|l| !l.is_empty())
        .collect();
    assert!(
        describe
            .last()
            .is_some_and(|l| l.contains("Canary failed! Scaling down podinfo.test")),
        "{describe:?}"
    );
}
