//! The Helm charts: they lint strictly, render valid Kubernetes manifests for the seed's install
//! commands and every documented mode, keep RBAC free of wildcards, and every documented value
//! changes what is rendered. Needs `helm` and `kubernetes-validate` (scripts/install-deps).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "e2e/prometheus.rs"]
mod prometheus;

#[path = "support/helm.rs"]
mod helm;

use helm::{chart, documents, rbac_rules, render, run, validate};
use serde_json::Value;

const CHARTS: [&str; 3] = ["flagger", "loadtester", "grafana"];

const SEED: &[&str] = &["--set", "metricsServer=http://prometheus.istio-system:9090"];
const SEED_SLACK: &[&str] = &[
    "--set",
    "metricsServer=http://prometheus.istio-system:9090",
    "--set",
    "slack.url=https://hooks.slack.com/services/YOUR/SLACK/WEBHOOK",
    "--set",
    "slack.channel=general",
    "--set",
    "slack.user=flagger",
];
const NAMESPACED: &[&str] = &["--set", "namespace=test"];
const LEADER: &[&str] = &[
    "--set",
    "leaderElection.enabled=true",
    "--set",
    "leaderElection.replicaCount=2",
];
const MONITORS: &[&str] = &[
    "--set",
    "podMonitor.enabled=true",
    "--set",
    "serviceMonitor.enabled=true",
];

fn flagger_modes() -> Vec<(&'static str, &'static [&'static str])> {
    vec![
        ("default", &[]),
        ("seed", SEED),
        ("seed with slack", SEED_SLACK),
        ("namespaced", NAMESPACED),
        ("leader election", LEADER),
        ("monitors", MONITORS),
    ]
}

#[test]
fn every_chart_passes_strict_lint() {
    for name in CHARTS {
        let path = chart(name);
        let (ok, out, err) = run("helm", &["lint", "--strict", path.to_str().unwrap()], None);
        assert!(ok, "helm lint --strict {name}:\n{out}\n{err}");
    }
}

#[test]
fn rendered_manifests_validate_in_every_mode() {
    for (label, args) in flagger_modes() {
        validate(&format!("flagger {label}"), &render("flagger", args));
    }
    validate("loadtester", &render("loadtester", &[]));
    validate("grafana", &render("grafana", &[]));
    validate(
        "grafana seed",
        &render(
            "grafana",
            &["--set", "url=http://prometheus.istio-system:9090"],
        ),
    );
}

#[test]
fn rbac_has_no_wildcards_and_is_namespaced_when_asked() {
    for (label, args) in flagger_modes() {
        let rules = rbac_rules(&render("flagger", args));
        assert!(!rules.is_empty(), "{label}: no RBAC rendered");
        for (_, rule) in &rules {
            for field in ["apiGroups", "resources", "verbs"] {
                for v in rule[field].as_array().unwrap() {
                    assert_ne!(v, "*", "{label}: wildcard in {field}: {rule}");
                }
            }
        }
    }
    let namespaced = documents(&render("flagger", NAMESPACED));
    assert!(
        !namespaced.iter().any(|d| matches!(
            d["kind"].as_str(),
            Some("ClusterRole" | "ClusterRoleBinding")
        )),
        "namespaced mode must not grant cluster-wide access"
    );
    let role = namespaced
        .iter()
        .find(|d| d["kind"] == "Role")
        .expect("namespaced Role");
    assert_eq!(role["metadata"]["namespace"], "test");
    // Secrets: no delete anywhere, and no access to pods at all.
    for (_, rule) in rbac_rules(&render("flagger", &[])) {
        let resources: Vec<&str> = rule["resources"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(!resources.contains(&"pods"), "{rule}");
        if resources.contains(&"secrets") {
            assert!(
                !rule["verbs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|v| v == "delete")
            );
        }
    }
    // Leases only with leader election.
    let lease = |yaml: &str| {
        rbac_rules(yaml).iter().any(|(_, r)| {
            r["resources"]
                .as_array()
                .unwrap()
                .iter()
                .any(|v| v == "leases")
        })
    };
    assert!(!lease(&render("flagger", &[])));
    assert!(lease(&render("flagger", LEADER)));
}

#[test]
fn pods_run_as_non_root_with_read_only_root_and_no_capabilities() {
    for (name, args) in [
        ("flagger", &[][..]),
        ("loadtester", &[][..]),
        ("grafana", &[][..]),
    ] {
        let docs = documents(&render(name, args));
        let dep = docs
            .iter()
            .find(|d| d["kind"] == "Deployment")
            .expect("deployment");
        let pod = &dep["spec"]["template"]["spec"];
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{name}");
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
            "{name}"
        );
        for c in pod["containers"].as_array().unwrap() {
            let sc = &c["securityContext"];
            assert_eq!(sc["readOnlyRootFilesystem"], true, "{name}");
            assert_eq!(sc["allowPrivilegeEscalation"], false, "{name}");
            assert_eq!(
                sc["capabilities"]["drop"],
                serde_json::json!(["ALL"]),
                "{name}"
            );
        }
    }
}

#[test]
fn webhook_urls_never_appear_in_the_pod_spec() {
    let url = "https://hooks.slack.com/services/YOUR/SLACK/WEBHOOK";
    let docs = documents(&render("flagger", SEED_SLACK));
    let dep = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    assert!(
        !dep.to_string().contains(url),
        "URL leaked into the Deployment"
    );
    let secret = docs
        .iter()
        .find(|d| d["kind"] == "Secret")
        .expect("notifier Secret");
    assert_eq!(secret["stringData"]["slack-url"], url);
    // An existing Secret: no Secret rendered, env points at it.
    let docs = documents(&render(
        "flagger",
        &[
            "--set",
            "slack.existingSecret=my-slack",
            "--set",
            "slack.channel=ops",
        ],
    ));
    assert!(!docs.iter().any(|d| d["kind"] == "Secret"));
    let env = docs.iter().find(|d| d["kind"] == "Deployment").unwrap()["spec"]["template"]["spec"]
        ["containers"][0]["env"]
        .to_string();
    assert!(env.contains("my-slack"), "{env}");
}

/// Every value group documented in values.yaml shows up in the rendered output where it should.
#[test]
fn every_documented_value_changes_the_rendered_output() {
    let cases: &[(&str, &[&str], &str)] = &[
        (
            "image",
            &[
                "--set",
                "image.repository=example.org/f",
                "--set",
                "image.tag=9.9",
                "--set",
                "image.pullPolicy=Always",
            ],
            "example.org/f:9.9",
        ),
        (
            "image pull secret",
            &["--set", "image.pullSecret=regcred"],
            "regcred",
        ),
        (
            "meshProvider",
            &["--set", "meshProvider=istio"],
            "--mesh-provider=istio",
        ),
        (
            "metricsServer",
            SEED,
            "--metrics-server=http://prometheus.istio-system:9090",
        ),
        ("namespace", NAMESPACED, "--namespace=test"),
        (
            "selectorLabels",
            &["--set", "selectorLabels=app.kubernetes.io/name"],
            "--selector-labels=app.kubernetes.io/name",
        ),
        (
            "configTracking",
            &["--set", "configTracking.enabled=false"],
            "--enable-config-tracking=false",
        ),
        ("slack.channel", SEED_SLACK, "--slack-channel=general"),
        (
            "slack.user",
            &["--set", "slack.user=robot"],
            "--slack-user=robot",
        ),
        (
            "slack.proxyUrl",
            &["--set", "slack.proxyUrl=http://proxy:3128"],
            "--slack-proxy-url=http://proxy:3128",
        ),
        ("slack.url", SEED_SLACK, "SLACK_URL"),
        (
            "msteams.url",
            &["--set", "msteams.url=https://teams.example/hook"],
            "MSTEAMS_URL",
        ),
        (
            "msteams.proxyUrl",
            &["--set", "msteams.proxyUrl=http://proxy:3128"],
            "MSTEAMS_PROXY_URL",
        ),
        (
            "eventWebhook",
            &["--set", "eventWebhook=http://events.test/"],
            "--event-webhook=http://events.test/",
        ),
        (
            "clusterName",
            &["--set", "clusterName=prod-eu"],
            "--cluster-name=prod-eu",
        ),
        ("leaderElection", LEADER, "--enable-leader-election=true"),
        ("leaderElection.replicaCount", LEADER, "replicas: 2"),
        (
            "noCrossNamespaceRefs",
            &["--set", "noCrossNamespaceRefs=true"],
            "--no-cross-namespace-refs=true",
        ),
        (
            "podMonitor",
            &["--set", "podMonitor.enabled=true"],
            "kind: PodMonitor",
        ),
        (
            "serviceMonitor",
            &["--set", "serviceMonitor.enabled=true"],
            "kind: ServiceMonitor",
        ),
        (
            "serviceAccount",
            &["--set", "serviceAccount.name=robot-sa"],
            "serviceAccountName: robot-sa",
        ),
        (
            "logLevel",
            &["--set", "logLevel=debug"],
            "--log-level=debug",
        ),
        (
            "resources",
            &["--set", "resources.limits.memory=1Gi"],
            "memory: 1Gi",
        ),
        (
            "securityContext",
            &["--set", "securityContext.runAsUser=12345"],
            "runAsUser: 12345",
        ),
        (
            "podSecurityContext",
            &["--set", "podSecurityContext.fsGroup=4242"],
            "fsGroup: 4242",
        ),
        (
            "nodeSelector",
            &["--set", "nodeSelector.disktype=ssd"],
            "disktype: ssd",
        ),
        (
            "tolerations",
            &[
                "--set",
                "tolerations[0].key=dedicated",
                "--set",
                "tolerations[0].operator=Exists",
            ],
            "key: dedicated",
        ),
        (
            "affinity",
            &[
                "--set",
                "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].key=zone",
                "--set",
                "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].operator=Exists",
            ],
            "key: zone",
        ),
        (
            "podAnnotations",
            &["--set", "podAnnotations.team=canary"],
            "team: canary",
        ),
        ("podLabels", &["--set", "podLabels.tier=ops"], "tier: ops"),
        (
            "env",
            &[
                "--set",
                "env[0].name=RUST_BACKTRACE",
                "--set",
                "env[0].value=1",
            ],
            "RUST_BACKTRACE",
        ),
    ];
    let baseline = render("flagger", &[]);
    for (group, args, expect) in cases {
        let out = render("flagger", args);
        assert!(
            out.contains(expect),
            "{group}: `{expect}` not rendered with {args:?}"
        );
        assert!(
            !baseline.contains(expect),
            "{group}: `{expect}` is rendered by default too"
        );
    }
    // rbac.create=false renders no RBAC; serviceAccount.create=false renders no ServiceAccount.
    let kinds = |args: &[&str]| -> Vec<String> {
        documents(&render("flagger", args))
            .iter()
            .filter_map(|d| d["kind"].as_str().map(str::to_string))
            .collect()
    };
    assert!(kinds(&[]).contains(&"ClusterRole".to_string()));
    assert!(
        !kinds(&["--set", "rbac.create=false"])
            .iter()
            .any(|k| k.contains("Role"))
    );
    assert!(
        !kinds(&["--set", "serviceAccount.create=false"]).contains(&"ServiceAccount".to_string())
    );
    // crd.create renders the CRDs as templates.
    let crds = render("flagger", &["--set", "crd.create=true"]);
    assert!(
        crds.contains("kind: CustomResourceDefinition"),
        "crd.create rendered no CRD"
    );
    assert!(!baseline.contains("kind: CustomResourceDefinition"));
    // Companion charts.
    let lt = render(
        "loadtester",
        &["--set", "cmd.timeout=5m", "--set", "cmd.maxConcurrent=3"],
    );
    assert!(lt.contains("--timeout=5m") && lt.contains("--max-concurrent=3"));
    let gf = render(
        "grafana",
        &["--set", "url=http://prometheus.istio-system:9090"],
    );
    assert!(gf.contains("url: http://prometheus.istio-system:9090"));
}

#[test]
fn seed_webhook_address_matches_the_loadtester_service() {
    // The seed's webhook URL is http://flagger-loadtester.test/ : release "flagger-loadtester" in "test".
    let path = chart("loadtester");
    let (ok, out, err) = run(
        "helm",
        &[
            "template",
            "flagger-loadtester",
            path.to_str().unwrap(),
            "--namespace",
            "test",
        ],
        None,
    );
    assert!(ok, "{err}");
    let svc = documents(&out)
        .into_iter()
        .find(|d| d["kind"] == "Service")
        .unwrap();
    assert_eq!(svc["metadata"]["name"], "flagger-loadtester");
    assert_eq!(svc["spec"]["ports"][0]["port"], 80);
}

/// The dashboards as `helm template` renders them (the `-dashboards` ConfigMap, seed values),
/// each parsed as JSON: (file name, dashboard).
fn rendered_dashboards() -> Vec<(String, Value)> {
    let out = render(
        "grafana",
        &["--set", "url=http://prometheus.istio-system:9090"],
    );
    let cm = documents(&out)
        .into_iter()
        .find(|d| {
            d["kind"] == "ConfigMap"
                && d["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.ends_with("-dashboards"))
        })
        .expect("dashboards ConfigMap");
    cm["data"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, text)| {
            let dash: Value = serde_json::from_str(text.as_str().unwrap())
                .unwrap_or_else(|e| panic!("{name} is not JSON: {e}"));
            (name.clone(), dash)
        })
        .collect()
}

/// Grafana substitutes variables before querying; use the values a user would pick.
fn substitute(expr: &str) -> String {
    expr.replace("$namespace", "test")
        .replace("$primary", "podinfo-primary")
        .replace("$canary", "podinfo")
}

/// What the dashboards ask Prometheus: every panel expression, and every `label_values(selector,
/// label)` variable query as (selector, label) — Grafana runs those through the label values API.
/// Variables substituted.
fn dashboard_queries() -> (Vec<String>, Vec<(String, String)>) {
    let mut exprs = Vec::new();
    let mut label_values = Vec::new();
    let dashboards = rendered_dashboards();
    assert!(
        dashboards.iter().any(|(name, _)| name == "istio.json"),
        "{:?}",
        dashboards.iter().map(|(n, _)| n).collect::<Vec<_>>()
    );
    for (_, dash) in &dashboards {
        for panel in dash["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().unwrap() {
                exprs.push(substitute(target["expr"].as_str().unwrap()));
            }
        }
        for var in dash["templating"]["list"].as_array().unwrap() {
            let q = var["query"]["query"].as_str().unwrap();
            let (selector, label) = q
                .strip_prefix("label_values(")
                .and_then(|s| s.strip_suffix(')'))
                .and_then(|s| s.rsplit_once(','))
                .unwrap_or_else(|| panic!("unexpected variable query {q}"));
            label_values.push((substitute(selector.trim()), label.trim().to_owned()));
        }
    }
    (exprs, label_values)
}

#[test]
fn grafana_dashboard_parses_and_every_query_is_valid_promql() {
    let (exprs, label_values) = dashboard_queries();
    assert!(
        exprs.len() >= 9,
        "expected RED panels for both sides plus flagger series"
    );
    let joined = exprs.join("\n");
    for needle in [
        "istio_requests_total",
        "istio_request_duration_milliseconds_bucket",
        "flagger_canary_weight",
        "flagger_canary_status",
        "0.50",
        "0.90",
        "0.99",
    ] {
        assert!(joined.contains(needle), "dashboard lacks {needle}");
    }
    for expr in exprs
        .iter()
        .chain(label_values.iter().map(|(selector, _)| selector))
    {
        promql_parser::parser::parse(expr)
            .unwrap_or_else(|e| panic!("invalid PromQL `{expr}`: {e}"));
    }
}

/// Acceptance 4 of issue 5: the real Prometheus accepts every query of the rendered dashboard
/// (instant queries for panels, the label values API for `label_values` variables).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grafana_dashboard_queries_are_accepted_by_prometheus() {
    let (exprs, label_values) = dashboard_queries();
    let prometheus = prometheus::Prometheus::start(&[]).await;
    for expr in &exprs {
        let (status, body) = prometheus.query(expr).await;
        assert_eq!(status, 200, "Prometheus refused `{expr}`: {body}");
        assert_eq!(body["status"], "success", "`{expr}`: {body}");
        assert_eq!(body["data"]["resultType"], "vector", "`{expr}`: {body}");
    }
    for (selector, label) in &label_values {
        let (status, body) = prometheus
            .get(
                &format!("/api/v1/label/{label}/values"),
                &[("match[]", selector.as_str())],
            )
            .await;
        assert_eq!(
            status, 200,
            "Prometheus refused label_values({selector}, {label}): {body}"
        );
        assert_eq!(body["status"], "success", "{selector}: {body}");
    }
    // A malformed query is refused, so the assertions above can fail.
    let (status, body) = prometheus
        .query("histogram_quantile(0.99, sum(rate(x[1m])) by le)")
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["errorType"], "bad_data", "{body}");
}
