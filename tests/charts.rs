//! The Helm charts: they lint strictly, render valid Kubernetes manifests for the seed's install
//! commands and every documented mode, keep RBAC free of wildcards, and every documented value
//! changes what is rendered. Needs `helm` and `kubernetes-validate` (scripts/install-deps).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "e2e/prometheus.rs"]
mod prometheus;

#[path = "support/helm.rs"]
mod helm;

use helm::{chart, documents, rbac_rules, render, run, validate};
use serde_json::{Value, json};

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
    // No deletes at all (generated objects go with their Canary through garbage collection; the
    // README's differences table says so), and no access to pods.
    for (label, args) in flagger_modes() {
        for (_, rule) in rbac_rules(&render("flagger", args)) {
            let resources: Vec<&str> = rule["resources"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(Value::as_str)
                .collect();
            assert!(!resources.contains(&"pods"), "{label}: {rule}");
            assert!(
                !rule["verbs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|v| v == "delete" || v == "deletecollection"),
                "{label}: {rule}"
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

// ----- Every value changes the field it documents (issue 6, acceptance 3) -------------------------

/// One value group: the values it covers; `--set`s for a baseline (`base`) and on top of it
/// (`sets`); the rendered field they change and what it must be. The field must equal `expect`
/// with `base + sets` and differ from it with `base` alone.
struct ValueCase {
    chart: &'static str,
    covers: &'static [&'static str],
    base: &'static [&'static str],
    sets: &'static [&'static str],
    field: fn(&[Value]) -> Value,
    expect: Value,
}

fn case(
    chart: &'static str,
    covers: &'static [&'static str],
    sets: &'static [&'static str],
    field: fn(&[Value]) -> Value,
    expect: Value,
) -> ValueCase {
    ValueCase {
        chart,
        covers,
        base: &[],
        sets,
        field,
        expect,
    }
}

fn on(base: &'static [&'static str], mut c: ValueCase) -> ValueCase {
    c.base = base;
    c
}

static NULL: Value = Value::Null;

/// The first rendered object of a kind (Null when there is none).
fn object<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter().find(|d| d["kind"] == kind).unwrap_or(&NULL)
}

fn named<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or(&NULL)
}

fn deployment(docs: &[Value]) -> &Value {
    object(docs, "Deployment")
}

fn pod(docs: &[Value]) -> &Value {
    &deployment(docs)["spec"]["template"]["spec"]
}

fn container(docs: &[Value]) -> &Value {
    &pod(docs)["containers"][0]
}

/// The value of `--flag=value` in the container's args (Null when absent).
fn arg(docs: &[Value], flag: &str) -> Value {
    container(docs)["args"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .find_map(|a| a.strip_prefix(flag)?.strip_prefix('='))
        .map_or(Value::Null, |v| Value::String(v.to_owned()))
}

/// The container's env entry `name` (Null when absent).
fn env(docs: &[Value], name: &str) -> Value {
    container(docs)["env"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["name"] == name)
        .cloned()
        .unwrap_or(Value::Null)
}

fn count(docs: &[Value], kinds: &[&str]) -> Value {
    docs.iter()
        .filter(|d| kinds.iter().any(|k| d["kind"] == *k))
        .count()
        .into()
}

fn secret_env(name: &str, secret: &str, key: &str) -> Value {
    json!({"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}})
}

/// Values every chart's pod has.
fn pod_cases(chart: &'static str) -> Vec<ValueCase> {
    vec![
        case(
            chart,
            &["image.repository", "image.tag"],
            &["image.repository=example.org/x", "image.tag=v9"],
            |d| container(d)["image"].clone(),
            json!("example.org/x:v9"),
        ),
        case(
            chart,
            &["image.pullPolicy"],
            &["image.pullPolicy=Always"],
            |d| container(d)["imagePullPolicy"].clone(),
            json!("Always"),
        ),
        case(
            chart,
            &["resources"],
            &["resources.limits.memory=1Gi"],
            |d| container(d)["resources"]["limits"]["memory"].clone(),
            json!("1Gi"),
        ),
        case(
            chart,
            &["podSecurityContext"],
            &["podSecurityContext.runAsUser=4242"],
            |d| pod(d)["securityContext"]["runAsUser"].clone(),
            json!(4242),
        ),
        case(
            chart,
            &["securityContext"],
            &["securityContext.runAsUser=12345"],
            |d| container(d)["securityContext"]["runAsUser"].clone(),
            json!(12345),
        ),
        case(
            chart,
            &["nodeSelector"],
            &["nodeSelector.disktype=ssd"],
            |d| pod(d)["nodeSelector"].clone(),
            json!({"disktype": "ssd"}),
        ),
        case(
            chart,
            &["tolerations"],
            &[
                "tolerations[0].key=dedicated",
                "tolerations[0].operator=Exists",
            ],
            |d| pod(d)["tolerations"].clone(),
            json!([{"key": "dedicated", "operator": "Exists"}]),
        ),
        case(
            chart,
            &["affinity"],
            &[
                "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].key=zone",
                "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].operator=Exists",
            ],
            |d| pod(d)["affinity"].clone(),
            json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "Exists"}]}]
            }}}),
        ),
        case(
            chart,
            &["nameOverride"],
            &["nameOverride=x1"],
            |d| deployment(d)["metadata"]["name"].clone(),
            // `render` names the release after the chart.
            json!(format!("{chart}-x1")),
        ),
        case(
            chart,
            &["fullnameOverride"],
            &["fullnameOverride=fl"],
            |d| deployment(d)["metadata"]["name"].clone(),
            json!("fl"),
        ),
    ]
}

fn value_cases() -> Vec<ValueCase> {
    const F: &str = "flagger";
    const PODMONITOR: &[&str] = &["podMonitor.enabled=true"];
    const SERVICEMONITOR: &[&str] = &["serviceMonitor.enabled=true"];
    let rbac = |d: &[Value]| -> Value {
        let mut kinds: Vec<&str> = d
            .iter()
            .filter_map(|d| d["kind"].as_str())
            .filter(|k| k.contains("Role"))
            .collect();
        kinds.sort();
        json!(kinds)
    };
    let mut cases = pod_cases(F);
    cases.extend(pod_cases("loadtester"));
    cases.extend(pod_cases("grafana"));
    cases.extend([
        // flagger: the operator's flags.
        case(
            F,
            &["image.pullSecret"],
            &["image.pullSecret=regcred"],
            |d| pod(d)["imagePullSecrets"].clone(),
            json!([{"name": "regcred"}]),
        ),
        case(
            F,
            &["logLevel"],
            &["logLevel=debug"],
            |d| arg(d, "--log-level"),
            json!("debug"),
        ),
        case(
            F,
            &["meshProvider"],
            &["meshProvider=istio"],
            |d| arg(d, "--mesh-provider"),
            json!("istio"),
        ),
        case(
            F,
            &["metricsServer"],
            &["metricsServer=http://prometheus.istio-system:9090"],
            |d| arg(d, "--metrics-server"),
            json!("http://prometheus.istio-system:9090"),
        ),
        case(
            F,
            &["namespace"],
            &["namespace=test"],
            |d| arg(d, "--namespace"),
            json!("test"),
        ),
        case(
            F,
            &["namespace"],
            &["namespace=test"],
            rbac,
            json!(["Role", "RoleBinding"]),
        ),
        case(
            F,
            &["namespace"],
            &["namespace=test"],
            |d| object(d, "Role")["metadata"]["namespace"].clone(),
            json!("test"),
        ),
        case(
            F,
            &["selectorLabels"],
            &["selectorLabels=app.kubernetes.io/name"],
            |d| arg(d, "--selector-labels"),
            json!("app.kubernetes.io/name"),
        ),
        case(
            F,
            &["configTracking.enabled"],
            &["configTracking.enabled=false"],
            |d| arg(d, "--enable-config-tracking"),
            json!("false"),
        ),
        case(
            F,
            &["eventWebhook"],
            &["eventWebhook=http://events.test/"],
            |d| arg(d, "--event-webhook"),
            json!("http://events.test/"),
        ),
        case(
            F,
            &["clusterName"],
            &["clusterName=prod-eu"],
            |d| arg(d, "--cluster-name"),
            json!("prod-eu"),
        ),
        case(
            F,
            &["noCrossNamespaceRefs"],
            &["noCrossNamespaceRefs=true"],
            |d| arg(d, "--no-cross-namespace-refs"),
            json!("true"),
        ),
        // Notifiers: URLs go to a Secret (or come from an existing one), never into the pod spec.
        case(
            F,
            &["slack.user"],
            &["slack.user=robot"],
            |d| arg(d, "--slack-user"),
            json!("robot"),
        ),
        case(
            F,
            &["slack.channel"],
            &["slack.channel=ops"],
            |d| arg(d, "--slack-channel"),
            json!("ops"),
        ),
        case(
            F,
            &["slack.proxyUrl"],
            &["slack.proxyUrl=http://proxy:3128"],
            |d| arg(d, "--slack-proxy-url"),
            json!("http://proxy:3128"),
        ),
        case(
            F,
            &["slack.url"],
            &["slack.url=https://hooks.slack.com/x"],
            |d| object(d, "Secret")["stringData"]["slack-url"].clone(),
            json!("https://hooks.slack.com/x"),
        ),
        case(
            F,
            &["slack.url"],
            &["slack.url=https://hooks.slack.com/x"],
            |d| env(d, "SLACK_URL"),
            secret_env("SLACK_URL", "flagger-notifiers", "slack-url"),
        ),
        case(
            F,
            &["slack.existingSecret"],
            &["slack.existingSecret=my-slack"],
            |d| env(d, "SLACK_URL"),
            secret_env("SLACK_URL", "my-slack", "address"),
        ),
        on(
            &["slack.existingSecret=my-slack"],
            case(
                F,
                &["slack.existingSecretKey"],
                &["slack.existingSecretKey=url"],
                |d| env(d, "SLACK_URL"),
                secret_env("SLACK_URL", "my-slack", "url"),
            ),
        ),
        case(
            F,
            &["msteams.url"],
            &["msteams.url=https://teams.example/hook"],
            |d| object(d, "Secret")["stringData"]["msteams-url"].clone(),
            json!("https://teams.example/hook"),
        ),
        case(
            F,
            &["msteams.url"],
            &["msteams.url=https://teams.example/hook"],
            |d| env(d, "MSTEAMS_URL"),
            secret_env("MSTEAMS_URL", "flagger-notifiers", "msteams-url"),
        ),
        case(
            F,
            &["msteams.proxyUrl"],
            &["msteams.proxyUrl=http://proxy:3128"],
            |d| env(d, "MSTEAMS_PROXY_URL"),
            json!({"name": "MSTEAMS_PROXY_URL", "value": "http://proxy:3128"}),
        ),
        case(
            F,
            &["msteams.existingSecret"],
            &["msteams.existingSecret=my-teams"],
            |d| env(d, "MSTEAMS_URL"),
            secret_env("MSTEAMS_URL", "my-teams", "address"),
        ),
        on(
            &["msteams.existingSecret=my-teams"],
            case(
                F,
                &["msteams.existingSecretKey"],
                &["msteams.existingSecretKey=url"],
                |d| env(d, "MSTEAMS_URL"),
                secret_env("MSTEAMS_URL", "my-teams", "url"),
            ),
        ),
        // Leader election: replicas, the flag, a Lease Role; no Recreate strategy.
        case(
            F,
            &["leaderElection.enabled"],
            &["leaderElection.enabled=true"],
            |d| arg(d, "--enable-leader-election"),
            json!("true"),
        ),
        case(
            F,
            &["leaderElection.enabled"],
            &["leaderElection.enabled=true"],
            |d| named(d, "Role", "flagger-leader-election")["rules"][0]["resources"].clone(),
            json!(["leases"]),
        ),
        case(
            F,
            &["leaderElection.enabled"],
            &["leaderElection.enabled=true"],
            |d| deployment(d)["spec"]["strategy"].clone(),
            Value::Null,
        ),
        on(
            &["leaderElection.enabled=true"],
            case(
                F,
                &["leaderElection.replicaCount"],
                &["leaderElection.replicaCount=3"],
                |d| deployment(d)["spec"]["replicas"].clone(),
                json!(3),
            ),
        ),
        // Prometheus-operator monitors.
        case(
            F,
            &["podMonitor.enabled"],
            PODMONITOR,
            |d| count(d, &["PodMonitor"]),
            json!(1),
        ),
        on(
            PODMONITOR,
            case(
                F,
                &["podMonitor.namespace"],
                &["podMonitor.namespace=monitoring"],
                |d| object(d, "PodMonitor")["metadata"]["namespace"].clone(),
                json!("monitoring"),
            ),
        ),
        on(
            PODMONITOR,
            case(
                F,
                &["podMonitor.interval"],
                &["podMonitor.interval=5s"],
                |d| object(d, "PodMonitor")["spec"]["podMetricsEndpoints"][0]["interval"].clone(),
                json!("5s"),
            ),
        ),
        on(
            PODMONITOR,
            case(
                F,
                &["podMonitor.honorLabels"],
                &["podMonitor.honorLabels=true"],
                |d| {
                    object(d, "PodMonitor")["spec"]["podMetricsEndpoints"][0]["honorLabels"].clone()
                },
                json!(true),
            ),
        ),
        on(
            PODMONITOR,
            case(
                F,
                &["podMonitor.additionalLabels"],
                &["podMonitor.additionalLabels.release=prom"],
                |d| object(d, "PodMonitor")["metadata"]["labels"]["release"].clone(),
                json!("prom"),
            ),
        ),
        case(
            F,
            &["serviceMonitor.enabled"],
            SERVICEMONITOR,
            |d| count(d, &["ServiceMonitor"]),
            json!(1),
        ),
        on(
            SERVICEMONITOR,
            case(
                F,
                &["serviceMonitor.namespace"],
                &["serviceMonitor.namespace=monitoring"],
                |d| object(d, "ServiceMonitor")["metadata"]["namespace"].clone(),
                json!("monitoring"),
            ),
        ),
        on(
            SERVICEMONITOR,
            case(
                F,
                &["serviceMonitor.interval"],
                &["serviceMonitor.interval=5s"],
                |d| object(d, "ServiceMonitor")["spec"]["endpoints"][0]["interval"].clone(),
                json!("5s"),
            ),
        ),
        on(
            SERVICEMONITOR,
            case(
                F,
                &["serviceMonitor.honorLabels"],
                &["serviceMonitor.honorLabels=true"],
                |d| object(d, "ServiceMonitor")["spec"]["endpoints"][0]["honorLabels"].clone(),
                json!(true),
            ),
        ),
        on(
            SERVICEMONITOR,
            case(
                F,
                &["serviceMonitor.labels"],
                &["serviceMonitor.labels.release=prom"],
                |d| object(d, "ServiceMonitor")["metadata"]["labels"]["release"].clone(),
                json!("prom"),
            ),
        ),
        // Identity and RBAC.
        case(
            F,
            &["serviceAccount.create"],
            &["serviceAccount.create=false"],
            |d| count(d, &["ServiceAccount"]),
            json!(0),
        ),
        case(
            F,
            &["serviceAccount.name"],
            &["serviceAccount.name=robot"],
            |d| pod(d)["serviceAccountName"].clone(),
            json!("robot"),
        ),
        case(
            F,
            &["serviceAccount.name"],
            &["serviceAccount.name=robot"],
            |d| object(d, "ClusterRoleBinding")["subjects"][0]["name"].clone(),
            json!("robot"),
        ),
        case(
            F,
            &["serviceAccount.annotations"],
            &["serviceAccount.annotations.team=ops"],
            |d| object(d, "ServiceAccount")["metadata"]["annotations"].clone(),
            json!({"team": "ops"}),
        ),
        case(F, &["rbac.create"], &["rbac.create=false"], rbac, json!([])),
        case(
            F,
            &["crd.create"],
            &["crd.create=true"],
            |d| {
                let mut names: Vec<&str> = d
                    .iter()
                    .filter(|d| d["kind"] == "CustomResourceDefinition")
                    .filter_map(|d| d["metadata"]["name"].as_str())
                    .collect();
                names.sort();
                json!(names)
            },
            json!([
                "alertproviders.flagger.app",
                "canaries.flagger.app",
                "metrictemplates.flagger.app"
            ]),
        ),
        // Pod metadata and environment.
        case(
            F,
            &["podAnnotations"],
            &["podAnnotations.team=canary"],
            |d| deployment(d)["spec"]["template"]["metadata"]["annotations"]["team"].clone(),
            json!("canary"),
        ),
        case(
            F,
            &["podLabels"],
            &["podLabels.tier=ops"],
            |d| deployment(d)["spec"]["template"]["metadata"]["labels"]["tier"].clone(),
            json!("ops"),
        ),
        case(
            F,
            &["deploymentLabels"],
            &["deploymentLabels.tier=ops"],
            |d| deployment(d)["metadata"]["labels"]["tier"].clone(),
            json!("ops"),
        ),
        case(
            F,
            &["env"],
            &["env[0].name=RUST_BACKTRACE", "env[0].value=full"],
            |d| env(d, "RUST_BACKTRACE"),
            json!({"name": "RUST_BACKTRACE", "value": "full"}),
        ),
        // loadtester
        case(
            "loadtester",
            &["replicaCount"],
            &["replicaCount=3"],
            |d| deployment(d)["spec"]["replicas"].clone(),
            json!(3),
        ),
        case(
            "loadtester",
            &["logLevel"],
            &["logLevel=debug"],
            |d| arg(d, "--log-level"),
            json!("debug"),
        ),
        case(
            "loadtester",
            &["cmd.timeout"],
            &["cmd.timeout=5m"],
            |d| arg(d, "--timeout"),
            json!("5m"),
        ),
        case(
            "loadtester",
            &["cmd.maxConcurrent"],
            &["cmd.maxConcurrent=3"],
            |d| arg(d, "--max-concurrent"),
            json!("3"),
        ),
        case(
            "loadtester",
            &["service.type"],
            &["service.type=NodePort"],
            |d| object(d, "Service")["spec"]["type"].clone(),
            json!("NodePort"),
        ),
        case(
            "loadtester",
            &["service.port"],
            &["service.port=8081"],
            |d| object(d, "Service")["spec"]["ports"][0]["port"].clone(),
            json!(8081),
        ),
        case(
            "loadtester",
            &["podAnnotations"],
            &["podAnnotations.team=canary"],
            |d| deployment(d)["spec"]["template"]["metadata"]["annotations"]["team"].clone(),
            json!("canary"),
        ),
        // grafana
        case(
            "grafana",
            &["url"],
            &["url=http://prometheus.istio-system:9090"],
            |d| {
                let cm = named(d, "ConfigMap", "grafana-provisioning");
                let text = cm["data"]["datasources.yaml"].as_str().unwrap_or("");
                let sources: Value = serde_saphyr::from_str(text).unwrap_or(Value::Null);
                sources["datasources"][0]["url"].clone()
            },
            json!("http://prometheus.istio-system:9090"),
        ),
        case(
            "grafana",
            &["anonymousAccess"],
            &["anonymousAccess=false"],
            |d| env(d, "GF_AUTH_ANONYMOUS_ENABLED")["value"].clone(),
            json!("false"),
        ),
        case(
            "grafana",
            &["admin.existingSecret"],
            &["admin.existingSecret=graf"],
            |d| env(d, "GF_SECURITY_ADMIN_PASSWORD"),
            secret_env("GF_SECURITY_ADMIN_PASSWORD", "graf", "admin-password"),
        ),
        on(
            &["admin.existingSecret=graf"],
            case(
                "grafana",
                &["admin.userKey"],
                &["admin.userKey=u"],
                |d| env(d, "GF_SECURITY_ADMIN_USER"),
                secret_env("GF_SECURITY_ADMIN_USER", "graf", "u"),
            ),
        ),
        on(
            &["admin.existingSecret=graf"],
            case(
                "grafana",
                &["admin.passwordKey"],
                &["admin.passwordKey=p"],
                |d| env(d, "GF_SECURITY_ADMIN_PASSWORD"),
                secret_env("GF_SECURITY_ADMIN_PASSWORD", "graf", "p"),
            ),
        ),
        case(
            "grafana",
            &["service.type"],
            &["service.type=NodePort"],
            |d| object(d, "Service")["spec"]["type"].clone(),
            json!("NodePort"),
        ),
        case(
            "grafana",
            &["service.port"],
            &["service.port=8081"],
            |d| object(d, "Service")["spec"]["ports"][0]["port"].clone(),
            json!(8081),
        ),
    ]);
    cases
}

fn set_args(sets: &[&str]) -> Vec<String> {
    sets.iter()
        .flat_map(|s| ["--set".to_owned(), (*s).to_owned()])
        .collect()
}

fn rendered(chart: &str, sets: &[&str]) -> Vec<Value> {
    let args = set_args(sets);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    documents(&render(chart, &args))
}

#[test]
fn every_value_changes_the_field_it_documents() {
    for c in value_cases() {
        let label = format!(
            "{} {:?} with {:?} on {:?}",
            c.chart, c.covers, c.sets, c.base
        );
        let before = (c.field)(&rendered(c.chart, c.base));
        let all: Vec<&str> = c.base.iter().chain(c.sets).copied().collect();
        let after = (c.field)(&rendered(c.chart, &all));
        assert_eq!(after, c.expect, "{label}");
        assert_ne!(before, c.expect, "{label}: already so without it");
    }
}

/// Leaf paths of a values.yaml (maps are walked; an empty map or a list is a leaf).
fn value_paths(prefix: &str, v: &Value, out: &mut Vec<String>) {
    match v.as_object() {
        Some(map) if !map.is_empty() => {
            for (k, v) in map {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                value_paths(&path, v, out);
            }
        }
        _ => out.push(prefix.to_owned()),
    }
}

#[test]
fn every_value_of_every_chart_has_a_case() {
    let cases = value_cases();
    for name in CHARTS {
        let text = std::fs::read_to_string(chart(name).join("values.yaml")).unwrap();
        let values: Value = serde_saphyr::from_str(&text).unwrap();
        let mut paths = Vec::new();
        value_paths("", &values, &mut paths);
        assert!(paths.len() > 10, "{name}: {paths:?}");
        let covers: Vec<&str> = cases
            .iter()
            .filter(|c| c.chart == name)
            .flat_map(|c| c.covers.iter().copied())
            .collect();
        for path in &paths {
            assert!(
                covers
                    .iter()
                    .any(|c| path == c || path.starts_with(&format!("{c}."))),
                "{name}: value {path} has no case in value_cases()"
            );
        }
        // And no case names a value the chart does not have.
        for c in &covers {
            assert!(
                paths
                    .iter()
                    .any(|p| p == c || p.starts_with(&format!("{c}."))),
                "{name}: case for {c}, which values.yaml does not have"
            );
        }
    }
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
