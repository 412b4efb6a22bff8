//! Real kubectl against the testbed: discovery, OpenAPI-driven validation, apply of the seed's
//! manifests and a CRD with printer columns, get/describe/set image/wait/patch/delete. Each step
//! asserts on what kubectl prints, as a user would read it.
//!
//! kubectl comes from `$KUBECTL`, `/usr/bin/kubectl` or `PATH` (`.ci/run` installs it); without it
//! the test fails saying so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use flagger_testbed::{Config, Testbed};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

fn kubectl_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("KUBECTL") {
        return PathBuf::from(p);
    }
    let usr = PathBuf::from("/usr/bin/kubectl");
    if usr.exists() {
        return usr;
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("kubectl"))
            .find(|p| p.exists())
    });
    found.unwrap_or_else(|| {
        panic!(
            "kubectl is not installed (looked at $KUBECTL, /usr/bin/kubectl and PATH): \
             this test drives the real kubectl; run .ci/run or install kubectl 1.32"
        )
    })
}

struct Kubectl {
    bin: PathBuf,
    kubeconfig: PathBuf,
    cache: PathBuf,
}

struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Kubectl {
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(&self.cache)
            .args(args)
            .env_remove("KUBECONFIG")
            .stdin(Stdio::null());
        c
    }

    /// Runs kubectl (on a blocking thread, so the in-process server keeps serving).
    async fn run(&self, args: &[&str]) -> Out {
        self.run_with_stdin(args, None).await
    }

    async fn run_with_stdin(&self, args: &[&str], stdin: Option<String>) -> Out {
        let mut cmd = self.command(args);
        if stdin.is_some() {
            cmd.stdin(Stdio::piped());
        }
        let out = tokio::task::spawn_blocking(move || {
            cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
            let mut child = cmd.spawn().expect("kubectl starts");
            if let Some(input) = stdin {
                use std::io::Write;
                child
                    .stdin
                    .take()
                    .unwrap()
                    .write_all(input.as_bytes())
                    .unwrap();
            }
            child.wait_with_output().unwrap()
        })
        .await
        .unwrap();
        Out {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs kubectl and requires success; returns stdout.
    async fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args).await;
        assert!(
            out.ok,
            "kubectl {} failed:\nstdout: {}\nstderr: {}",
            args.join(" "),
            out.stdout,
            out.stderr
        );
        out.stdout
    }
}

/// The whitespace-separated cells of each output line.
fn rows(out: &str) -> Vec<Vec<String>> {
    out.lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .filter(|r: &Vec<String>| !r.is_empty())
        .collect()
}

fn fixture(name: &str) -> String {
    Path::new(FIXTURES).join(name).display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_drives_the_testbed() {
    let bin = kubectl_binary();
    let tb = Testbed::start(Config::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, tb.kubeconfig_yaml()).unwrap();
    let k = Kubectl {
        bin,
        kubeconfig,
        cache: dir.path().join("cache"),
    };

    // Discovery: the server version and every resource with its short names.
    let version = k.ok(&["version"]).await;
    assert!(
        version.contains("Server Version: v1.32.0-flagger-testbed"),
        "{version}"
    );
    let resources = rows(&k.ok(&["api-resources"]).await);
    for expected in [
        "deployments deploy apps/v1 true Deployment",
        "replicasets rs apps/v1 true ReplicaSet",
        "horizontalpodautoscalers hpa autoscaling/v2 true HorizontalPodAutoscaler",
        "namespaces ns v1 false Namespace",
        "services svc v1 true Service",
        "configmaps cm v1 true ConfigMap",
        "pods po v1 true Pod",
        "leases coordination.k8s.io/v1 true Lease",
        "customresourcedefinitions crd,crds apiextensions.k8s.io/v1 false CustomResourceDefinition",
        "virtualservices vs networking.istio.io/v1 true VirtualService",
        "destinationrules dr networking.istio.io/v1 true DestinationRule",
        "gateways gw networking.istio.io/v1 true Gateway",
    ] {
        let want: Vec<String> = expected.split(' ').map(str::to_string).collect();
        assert!(
            resources.contains(&want),
            "api-resources lacks {expected:?}: {resources:?}"
        );
    }
    // The Istio CRDs are installed and established.
    let crds = k.ok(&["get", "crd", "-o", "name"]).await;
    for n in [
        "virtualservices.networking.istio.io",
        "destinationrules.networking.istio.io",
        "gateways.networking.istio.io",
    ] {
        assert!(
            crds.contains(&format!(
                "customresourcedefinition.apiextensions.k8s.io/{n}"
            )),
            "{crds}"
        );
    }
    let none = k.run(&["get", "vs", "-A"]).await;
    assert!(
        none.ok && none.stderr.contains("No resources found"),
        "{}",
        none.stderr
    );

    // The seed's manifests, with kubectl's default (strict, server-side) validation.
    let out = k
        .ok(&["apply", "-f", &fixture("namespace-test.yaml")])
        .await;
    assert_eq!(out.trim(), "namespace/test created");
    let out = k
        .ok(&["apply", "-f", &fixture("podinfo-deployment.yaml")])
        .await;
    assert_eq!(out.trim(), "deployment.apps/podinfo created");
    let out = k.ok(&["apply", "-f", &fixture("podinfo-hpa.yaml")]).await;
    assert_eq!(
        out.trim(),
        "horizontalpodautoscaler.autoscaling/podinfo created"
    );
    let out = k
        .ok(&["apply", "-f", &fixture("podinfo-deployment.yaml")])
        .await;
    assert_eq!(out.trim(), "deployment.apps/podinfo unchanged");
    let hpa = k
        .ok(&[
            "-n",
            "test",
            "get",
            "hpa",
            "podinfo",
            "-o",
            "jsonpath={.apiVersion} {.spec.maxReplicas}",
        ])
        .await;
    assert_eq!(hpa, "autoscaling/v2 4");
    let ns_label = k
        .ok(&[
            "get",
            "ns",
            "test",
            "-o",
            "jsonpath={.metadata.labels.istio-injection}",
        ])
        .await;
    assert_eq!(ns_label, "enabled");

    // A CRD with printer columns, then an object of it.
    let out = k.ok(&["apply", "-f", &fixture("canary-crd.yaml")]).await;
    assert_eq!(
        out.trim(),
        "customresourcedefinition.apiextensions.k8s.io/canaries.flagger.app created"
    );
    let out = k
        .ok(&[
            "wait",
            "--for=condition=Established",
            "crd/canaries.flagger.app",
            "--timeout=10s",
        ])
        .await;
    assert_eq!(
        out.trim(),
        "customresourcedefinition.apiextensions.k8s.io/canaries.flagger.app condition met"
    );
    // kubectl's default validation is strict and left to the server (it found `fieldValidation`
    // in the OpenAPI v3 document): a field the schema does not know is refused, naming it.
    let bad = k
        .run_with_stdin(
            &["apply", "-f", "-", "-v=6"],
            Some(
                std::fs::read_to_string(fixture("podinfo-canary.yaml"))
                    .unwrap()
                    .replace(
                        "name: podinfo\n  progressDeadlineSeconds",
                        "name: podinfo\n    nmae: typo\n  progressDeadlineSeconds",
                    ),
            ),
        )
        .await;
    assert!(!bad.ok, "unknown field accepted: {}", bad.stdout);
    assert!(
        bad.stderr.contains("fieldValidation=Strict"),
        "{}",
        bad.stderr
    );
    assert!(
        bad.stderr.contains("unknown field \"spec.targetRef.nmae\""),
        "{}",
        bad.stderr
    );
    // explain reads the CRD's schema from the OpenAPI v3 document.
    let explained = k.ok(&["explain", "canaries.spec.targetRef"]).await;
    assert!(explained.contains("KIND:       Canary"), "{explained}");
    assert!(
        explained.contains("FIELD: targetRef <Object>"),
        "{explained}"
    );
    assert!(
        explained.contains("kind\t<string> -required-"),
        "{explained}"
    );
    let out = k
        .ok(&["apply", "-f", &fixture("podinfo-canary.yaml")])
        .await;
    assert_eq!(out.trim(), "canary.flagger.app/podinfo created");

    // `all` takes the categories from discovery: built-ins and the Canary CRD's (the workload
    // controllers may have added ReplicaSets and Pods, also in `all`; events and namespaces not).
    let all = k.ok(&["-n", "test", "get", "all", "-o", "name"]).await;
    for want in [
        "canary.flagger.app/podinfo",
        "deployment.apps/podinfo",
        "horizontalpodautoscaler.autoscaling/podinfo",
    ] {
        assert!(
            all.lines().any(|l| l == want),
            "{want} missing from get all: {all}"
        );
    }
    for line in all.lines() {
        let kind = line.split('/').next().unwrap();
        assert!(
            [
                "canary.flagger.app",
                "deployment.apps",
                "horizontalpodautoscaler.autoscaling",
                "replicaset.apps",
                "pod",
                "service"
            ]
            .contains(&kind),
            "{line} is not in category all"
        );
    }

    // Status through the status subresource; the printer columns show it.
    let out = k
        .ok(&[
            "-n",
            "test",
            "patch",
            "canary",
            "podinfo",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"phase":"Progressing","canaryWeight":15,"failedChecks":0,"lastTransitionTime":"2019-01-16T14:05:07Z"}}"#,
        ])
        .await;
    assert_eq!(out.trim(), "canary.flagger.app/podinfo patched");
    let table = rows(&k.ok(&["get", "canaries", "-A"]).await);
    assert_eq!(
        table,
        vec![
            vec![
                "NAMESPACE",
                "NAME",
                "STATUS",
                "WEIGHT",
                "LASTTRANSITIONTIME"
            ],
            vec![
                "test",
                "podinfo",
                "Progressing",
                "15",
                "2019-01-16T14:05:07Z"
            ],
        ]
    );
    let wide = rows(&k.ok(&["-n", "test", "get", "canaries", "-o", "wide"]).await);
    assert_eq!(
        wide[0],
        vec![
            "NAME",
            "STATUS",
            "WEIGHT",
            "SUSPENDED",
            "FAILEDCHECKS",
            "INTERVAL",
            "MIRROR",
            "STEPWEIGHT",
            "STEPWEIGHTS",
            "MAXWEIGHT",
            "LASTTRANSITIONTIME"
        ]
    );
    // Empty cells (suspend, mirror, stepWeights are unset) print as nothing, so only check the
    // values that are set, in order.
    assert_eq!(
        wide[1],
        vec![
            "podinfo",
            "Progressing",
            "15",
            "0",
            "1m",
            "10",
            "50",
            "2019-01-16T14:05:07Z"
        ]
    );
    // A spec-side patch cannot touch the status.
    k.ok(&[
        "-n",
        "test",
        "patch",
        "canary",
        "podinfo",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Failed"}}"#,
    ])
    .await;
    let phase = k
        .ok(&[
            "-n",
            "test",
            "get",
            "canary",
            "podinfo",
            "-o",
            "jsonpath={.status.phase}",
        ])
        .await;
    assert_eq!(phase, "Progressing");

    // set image bumps the Deployment's generation (the HPA may already have scaled it).
    let before: u64 = k
        .ok(&[
            "-n",
            "test",
            "get",
            "deploy",
            "podinfo",
            "-o",
            "jsonpath={.metadata.generation}",
        ])
        .await
        .trim()
        .parse()
        .unwrap();
    let out = k
        .ok(&[
            "-n",
            "test",
            "set",
            "image",
            "deployment/podinfo",
            "podinfod=quay.io/stefanprodan/podinfo:1.4.1",
        ])
        .await;
    assert_eq!(out.trim(), "deployment.apps/podinfo image updated");
    let dep = k
        .ok(&[
            "-n",
            "test",
            "get",
            "deploy",
            "podinfo",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image} {.metadata.generation} {.spec.template.spec.containers[0].env[0].value}",
        ])
        .await;
    assert_eq!(
        dep,
        format!("quay.io/stefanprodan/podinfo:1.4.1 {} blue", before + 1)
    );

    // describe shows the events that point at the object.
    let uid = k
        .ok(&[
            "-n",
            "test",
            "get",
            "canary",
            "podinfo",
            "-o",
            "jsonpath={.metadata.uid}",
        ])
        .await;
    let now = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ");
    let mut events = String::new();
    for (i, (kind, message)) in [
        ("Normal", "New revision detected podinfo.test"),
        (
            "Warning",
            "Waiting for podinfo.test rollout to finish: 0 of 1 updated replicas are available",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        events.push_str(&format!(
            "---\napiVersion: v1\nkind: Event\nmetadata:\n  name: podinfo.{i}\n  namespace: test\n\
             involvedObject:\n  apiVersion: flagger.app/v1beta1\n  kind: Canary\n  name: podinfo\n  namespace: test\n  uid: {uid}\n\
             reason: Synced\nmessage: \"{message}\"\ntype: {kind}\nsource:\n  component: flagger\n\
             firstTimestamp: \"{now}\"\nlastTimestamp: \"{now}\"\ncount: 1\n"
        ));
    }
    // An event about another object must not show.
    events.push_str(&format!(
        "---\napiVersion: v1\nkind: Event\nmetadata:\n  name: other.0\n  namespace: test\n\
         involvedObject:\n  apiVersion: apps/v1\n  kind: Deployment\n  name: podinfo\n  namespace: test\n\
         reason: ScalingReplicaSet\nmessage: \"Scaled up replica set podinfo-1 to 2\"\ntype: Normal\nsource:\n  component: deployment-controller\n\
         firstTimestamp: \"{now}\"\nlastTimestamp: \"{now}\"\ncount: 1\n"
    ));
    let created = k.run_with_stdin(&["create", "-f", "-"], Some(events)).await;
    assert!(created.ok, "{}", created.stderr);
    assert_eq!(
        created.stdout.lines().collect::<Vec<_>>(),
        vec![
            "event/podinfo.0 created",
            "event/podinfo.1 created",
            "event/other.0 created"
        ]
    );
    let described = k.ok(&["-n", "test", "describe", "canary/podinfo"]).await;
    let lines = rows(&described);
    assert!(
        lines.contains(&vec!["Name:".into(), "podinfo".into()]),
        "{described}"
    );
    assert!(
        lines.contains(&vec!["Namespace:".into(), "test".into()]),
        "{described}"
    );
    let events_at = described.find("Events:").expect("an Events section");
    let ev_rows = rows(&described[events_at..]);
    assert_eq!(
        ev_rows[1],
        vec!["Type", "Reason", "Age", "From", "Message"],
        "{described}"
    );
    let messages: Vec<String> = ev_rows[3..]
        .iter()
        .map(|r| format!("{} {} {} {}", r[0], r[1], r[3], r[4..].join(" ")))
        .collect();
    assert_eq!(
        messages,
        vec![
            "Normal Synced flagger New revision detected podinfo.test",
            "Warning Synced flagger Waiting for podinfo.test rollout to finish: 0 of 1 updated replicas are available",
        ],
        "{described}"
    );

    // wait --for=jsonpath blocks until the status changes (patched a moment later).
    let patcher = {
        let cmd = k.command(&[
            "-n",
            "test",
            "patch",
            "canary",
            "podinfo",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"phase":"Succeeded","canaryWeight":0}}"#,
        ]);
        tokio::task::spawn_blocking(move || {
            std::thread::sleep(Duration::from_millis(1500));
            let mut cmd = cmd;
            cmd.output().unwrap()
        })
    };
    let started = Instant::now();
    let out = k
        .ok(&[
            "-n",
            "test",
            "wait",
            "canary/podinfo",
            "--for=jsonpath={.status.phase}=Succeeded",
            "--timeout=30s",
        ])
        .await;
    assert_eq!(out.trim(), "canary.flagger.app/podinfo condition met");
    assert!(
        started.elapsed() >= Duration::from_millis(1000),
        "wait returned before the status changed"
    );
    let patched = patcher.await.unwrap();
    assert!(
        patched.status.success(),
        "{}",
        String::from_utf8_lossy(&patched.stderr)
    );
    let table = rows(&k.ok(&["get", "canaries", "-n", "test"]).await);
    assert_eq!(table[1][..3], ["podinfo", "Succeeded", "0"]);

    // delete: the object, then its CRD (the resource stops being served), then the namespace.
    let out = k
        .ok(&["delete", "-f", &fixture("podinfo-canary.yaml")])
        .await;
    assert_eq!(out.trim(), "canary.flagger.app \"podinfo\" deleted");
    let none = k.run(&["get", "canaries", "-A"]).await;
    assert!(
        none.ok && none.stderr.contains("No resources found"),
        "{}",
        none.stderr
    );
    let out = k.ok(&["delete", "crd", "canaries.flagger.app"]).await;
    assert_eq!(
        out.trim(),
        "customresourcedefinition.apiextensions.k8s.io \"canaries.flagger.app\" deleted"
    );
    // kubectl keeps discovery on disk; `api-resources` refreshes it (as a user would after
    // "Unable to list").
    let flagger = k.ok(&["api-resources", "--api-group=flagger.app"]).await;
    assert!(!flagger.contains("canaries"), "{flagger}");
    let gone = k.run(&["get", "canaries", "-A"]).await;
    assert!(!gone.ok, "canaries still served: {}", gone.stdout);
    assert!(
        gone.stderr
            .contains("the server doesn't have a resource type \"canaries\""),
        "{}",
        gone.stderr
    );
    let out = k.ok(&["delete", "-f", &fixture("podinfo-hpa.yaml")]).await;
    assert_eq!(
        out.trim(),
        "horizontalpodautoscaler.autoscaling \"podinfo\" deleted"
    );
    let out = k.ok(&["delete", "namespace", "test"]).await;
    assert_eq!(out.trim(), "namespace \"test\" deleted");
    let left = k.run(&["get", "deploy,hpa,events", "-n", "test"]).await;
    assert!(left.stdout.trim().is_empty(), "{}", left.stdout);
    let ns = k.run(&["get", "ns", "test"]).await;
    assert!(!ns.ok && ns.stderr.contains("NotFound"), "{}", ns.stderr);

    tb.shutdown().await;
}
