//! README.md is tested: this file checks what it says against the code, the charts and the binary.
//!
//! Elsewhere: `tests/demo.rs` runs the demo command, `testbed/tests/readme.rs` the testbed block,
//! `tests/e2e_install.rs` the Metrics section and the alert rule. Here:
//! - the Helm install block: each `helm upgrade -i` renders (as `helm template` with the same
//!   release, chart, namespace and `--set`s) to manifests `kubernetes-validate --strict` accepts,
//!   and every `--set` names a value the chart has and shows up in the output;
//! - the chart values named in the README exist in `charts/flagger/values.yaml`;
//! - the Configuration table: every flag is in `flagger run --help` with the default shown;
//! - the event texts the demo and Troubleshooting quote are what the decision core emits, on the
//!   demo's own Canary (a promotion, a rollback, no data, an invalid spec);
//! - the differences table: behaviour rows are checked here or name existing tests;
//! - the Architecture table and diagram, and every path the README mentions.
//!
//! Needs `helm` and `kubernetes-validate` (scripts/install-deps).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/helm.rs"]
mod helm;
#[path = "support/readme.rs"]
mod readme;

use std::collections::BTreeMap;
use std::process::Command;

use flagger_actors::crd::Canary;
use flagger_actors::crd::convert::canary_spec;
use flagger_rollout::{
    Action, CanarySpec, CanaryStatus, ConditionStatus, EventType, Gather, MeshProvider,
    MetricValue, Observations, Observed, Outcome, Phase, PrimaryObservation, ProviderCheck,
    Readiness, RolloutSlot, Routes, TargetObservation, Timestamp, Weights, decide, decide_invalid,
};
use serde_json::Value;

fn section(heading: &str) -> String {
    readme::section(&readme::readme(), heading)
}

fn read(path: &str) -> String {
    let path = readme::root().join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn yaml(path: &str) -> Value {
    serde_saphyr::from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The value at a dotted path of a values.yaml (`slack.url`); `name.*` asks for a map.
fn value_at<'a>(values: &'a Value, path: &str) -> Option<&'a Value> {
    let (path, map) = match path.strip_suffix(".*") {
        Some(p) => (p, true),
        None => (path, false),
    };
    let v = path.split('.').try_fold(values, |v, key| v.get(key))?;
    (!map || v.is_object()).then_some(v)
}

// ----- Install on a cluster with Helm -------------------------------------------------------------

/// One `helm upgrade -i` of the README.
#[derive(Debug)]
struct HelmInstall {
    release: String,
    chart: String,
    namespace: String,
    sets: Vec<(String, String)>,
}

fn helm_installs() -> Vec<HelmInstall> {
    let markdown = readme::readme();
    let blocks: Vec<_> = readme::code_blocks(&markdown)
        .into_iter()
        .filter(|b| b.section == "Install on a cluster with Helm")
        .collect();
    assert_eq!(blocks.len(), 1, "one install block expected: {blocks:?}");
    readme::commands(&blocks[0])
        .into_iter()
        .map(|words| {
            assert_eq!(words[..3], ["helm", "upgrade", "-i"], "{words:?}");
            let mut install = HelmInstall {
                release: words[3].clone(),
                chart: words[4].clone(),
                namespace: String::new(),
                sets: Vec::new(),
            };
            let mut rest = words[5..].iter();
            while let Some(word) = rest.next() {
                let (flag, inline) = match word.split_once('=') {
                    Some((f, v)) if f.starts_with("--") => (f, Some(v.to_owned())),
                    _ => (word.as_str(), None),
                };
                let mut value = || {
                    inline
                        .clone()
                        .or_else(|| rest.next().cloned())
                        .unwrap_or_else(|| panic!("{flag} without a value in {words:?}"))
                };
                match flag {
                    "--namespace" | "-n" => install.namespace = value(),
                    "--set" => {
                        let set = value();
                        let (k, v) = set.split_once('=').expect("--set key=value");
                        install.sets.push((k.to_owned(), v.to_owned()));
                    }
                    other => panic!("the test does not know helm flag {other} ({words:?})"),
                }
            }
            assert!(!install.namespace.is_empty(), "no --namespace: {words:?}");
            install
        })
        .collect()
}

#[test]
fn every_readme_helm_install_renders_valid_manifests_with_its_values() {
    let installs = helm_installs();
    // Every chart of the repository is installed by the README.
    let mut charts: Vec<String> = std::fs::read_dir(readme::root().join("charts"))
        .unwrap()
        .map(|e| format!("charts/{}", e.unwrap().file_name().to_string_lossy()))
        .collect();
    charts.sort();
    let mut installed: Vec<String> = installs.iter().map(|i| i.chart.clone()).collect();
    installed.sort();
    installed.dedup();
    assert_eq!(installed, charts);

    for install in &installs {
        let label = format!("{install:?}");
        let chart = readme::root().join(&install.chart);
        let chart = chart.to_str().unwrap();
        let values = yaml(&format!("{}/values.yaml", install.chart));
        let mut args = vec![
            install.release.clone(),
            chart.to_owned(),
            "--namespace".to_owned(),
            install.namespace.clone(),
        ];
        for (key, value) in &install.sets {
            // helm accepts any key; a misspelt one would silently do nothing.
            assert!(
                value_at(&values, key).is_some(),
                "{label}: {key} is not a value of {}",
                install.chart
            );
            args.push("--set".to_owned());
            args.push(format!("{key}={value}"));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = helm::template(&args);
        helm::validate(&label, &out);
        for (key, value) in &install.sets {
            assert!(
                out.contains(value.as_str()),
                "{label}: {key}={value} not rendered"
            );
        }
        for doc in helm::documents(&out) {
            if let Some(ns) = doc["metadata"]["namespace"].as_str() {
                assert_eq!(ns, install.namespace, "{label}: {}", doc["metadata"]);
            }
        }
        let mut lint = vec!["lint", "--strict"];
        lint.extend_from_slice(&args[1..]);
        let (ok, out, err) = helm::run("helm", &lint, None);
        assert!(ok, "{label}: helm lint --strict:\n{out}\n{err}");
    }
    // The seed's webhook calls http://flagger-loadtester.test/.
    assert!(installs.iter().any(|i| i.chart == "charts/loadtester"
        && i.release == "flagger-loadtester"
        && i.namespace == "test"));
}

#[test]
fn the_chart_values_the_readme_names_exist() {
    let install = section("Install on a cluster with Helm");
    let paragraph = readme::paragraphs(&install)
        .into_iter()
        .find(|p| p.starts_with("Chart values follow"))
        .expect("the chart values paragraph");
    let names = readme::backticked(&paragraph);
    assert!(names.len() >= 20, "{names:?}");
    let values = yaml("charts/flagger/values.yaml");
    for name in &names {
        assert!(
            value_at(&values, name).is_some(),
            "README names chart value `{name}`, charts/flagger/values.yaml has none"
        );
    }
}

// ----- Configuration ------------------------------------------------------------------------------

/// A flag as `--help` shows it: its `[default: ...]` and `[env: ...]`.
#[derive(Debug, Default)]
struct HelpFlag {
    default: Option<String>,
    env: Option<String>,
}

fn help_flags(args: &[&str]) -> BTreeMap<String, HelpFlag> {
    let out = Command::new(env!("CARGO_BIN_EXE_flagger"))
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let mut flags = BTreeMap::new();
    let mut current: Option<(String, HelpFlag)> = None;
    for line in text.lines() {
        let trimmed = line.trim_start();
        if line.starts_with("      --") || line.starts_with("  -") && trimmed.contains(" --") {
            if let Some((name, flag)) = current.take() {
                flags.insert(name, flag);
            }
            let name = trimmed
                .split_whitespace()
                .find(|w| w.starts_with("--"))
                .unwrap()
                .trim_end_matches(',')
                .to_owned();
            current = Some((name, HelpFlag::default()));
        } else if let Some((_, flag)) = current.as_mut() {
            if let Some(rest) = trimmed.split_once("[default: ").map(|(_, r)| r) {
                let value = rest.split_once(']').unwrap().0;
                flag.default = Some(value.trim_matches('"').to_owned());
            }
            if let Some(rest) = trimmed.strip_prefix("[env: ") {
                let env = rest.trim_end_matches(']').trim_end_matches('=');
                flag.env = Some(env.split('=').next().unwrap().to_owned());
            }
        }
    }
    if let Some((name, flag)) = current {
        flags.insert(name, flag);
    }
    flags
}

/// What a default written in words means in `--help`: `None` for no default.
fn prose_default(words: &str) -> Option<Option<&'static str>> {
    match words {
        "" | "in-cluster" | "unlimited" => Some(None),
        "all" => Some(Some("")),
        "off" => Some(Some("false")),
        _ => None,
    }
}

#[test]
fn every_configuration_flag_exists_with_the_default_the_readme_gives() {
    let config = section("Configuration");
    let run = help_flags(&["run", "--help"]);
    let top = help_flags(&["--help"]);
    let rows = readme::table_rows(&config);
    assert!(rows.len() >= 10, "{rows:?}");
    let mut seen = 0;
    for row in &rows {
        let spans = readme::backticked(&row[0]);
        assert!(!spans.is_empty(), "a flag row without flags: {row:?}");
        let flags: Vec<&HelpFlag> = spans
            .iter()
            .map(|name| {
                assert!(name.starts_with("--"), "{name} in {row:?}");
                assert!(
                    top.contains_key(name),
                    "`flagger --help` does not list {name}"
                );
                seen += 1;
                run.get(name)
                    .unwrap_or_else(|| panic!("`flagger run --help` has no {name}"))
            })
            .collect();
        for (name, flag) in spans.iter().zip(&flags) {
            assert!(flag.env.is_some(), "{name} reads no environment variable");
        }
        let cell = &row[1];
        let values = readme::backticked(cell);
        let only_values = values.iter().map(|v| format!("`{v}`")).collect::<Vec<_>>();
        if !values.is_empty() && only_values.join(", ") == *cell {
            // `a`, `b`: one default per flag, in order.
            assert_eq!(values.len(), flags.len(), "{row:?}");
            for ((name, flag), value) in spans.iter().zip(&flags).zip(&values) {
                assert_eq!(
                    flag.default.as_deref(),
                    Some(value.as_str()),
                    "README: {name} defaults to `{value}`; --help: {:?}",
                    flag.default
                );
            }
        } else if !values.is_empty() {
            // Words around names: --help's default text says the same.
            assert_eq!(flags.len(), 1, "{row:?}");
            let shown = flags[0].default.clone().unwrap_or_default();
            for value in &values {
                assert!(
                    shown.contains(value.as_str()),
                    "README: {} defaults to {cell}; --help says {shown:?}",
                    spans[0]
                );
            }
        } else {
            let expected = prose_default(cell)
                .unwrap_or_else(|| panic!("the test cannot read the default {cell:?}"));
            for (name, flag) in spans.iter().zip(&flags) {
                assert_eq!(
                    flag.default.as_deref(),
                    expected,
                    "README: {name} defaults to {cell:?}; --help: {:?}",
                    flag.default
                );
            }
        }
    }
    assert!(seen >= 20, "only {seen} flags in the table");
    // "each also reads an environment variable (`FLAGGER_*`, and upstream's `SLACK_URL`, ...)"
    let intro = readme::paragraphs(&config).remove(0);
    let envs: Vec<&str> = run.values().filter_map(|f| f.env.as_deref()).collect();
    for name in readme::backticked(&intro) {
        if let Some(prefix) = name.strip_suffix('*') {
            assert!(envs.iter().any(|e| e.starts_with(prefix)), "{name}");
        } else if name.chars().all(|c| c.is_ascii_uppercase() || c == '_') {
            assert!(
                envs.contains(&name.as_str()),
                "no flag reads {name}: {envs:?}"
            );
        }
    }
    for (name, flag) in &run {
        assert!(
            flag.env.is_some() || name == "--help",
            "{name} reads no environment variable"
        );
    }
}

// ----- Event texts, from the decision core --------------------------------------------------------

/// A canary and the objects it manages, folded through `decide` tick after tick. Actions change
/// the world the way the actors would; workloads are ready as soon as they change.
struct World {
    spec: CanarySpec,
    status: CanaryStatus,
    now: Timestamp,
    target: String,
    primary: Option<String>,
    routes: Option<Weights>,
    slot: RolloutSlot,
    events: Vec<(EventType, String)>,
}

impl World {
    fn new(spec: CanarySpec) -> Self {
        Self {
            spec,
            status: CanaryStatus::default(),
            now: Timestamp::from_unix_millis(1_700_000_000_000),
            target: "rev-1".into(),
            primary: None,
            routes: None,
            slot: RolloutSlot::Granted,
            events: Vec::new(),
        }
    }

    /// One tick, the metrics answering `metric(name)`.
    fn tick(&mut self, metric: &dyn Fn(&str) -> MetricValue) {
        let mut obs = Observations::new(
            self.now,
            Observed::Found(TargetObservation {
                revision: self.target.clone(),
                tracked_configs: BTreeMap::new(),
                readiness: Readiness::Ready,
            }),
            match &self.primary {
                Some(revision) => Observed::Found(PrimaryObservation {
                    readiness: Readiness::Ready,
                    revision: Some(revision.clone()),
                }),
                None => Observed::Missing,
            },
            match self.routes {
                Some(weights) => Observed::Found(Routes {
                    weights,
                    mirrored: false,
                }),
                None => Observed::Missing,
            },
        );
        let decision = loop {
            match decide(&self.spec, &self.status, &obs) {
                Outcome::Decided(d) => break d,
                Outcome::Gather(Gather::Metrics) => {
                    obs.metrics = Some(
                        self.spec
                            .analysis
                            .metrics
                            .iter()
                            .map(|m| flagger_rollout::MetricOutcome {
                                name: m.name.clone(),
                                value: metric(&m.name),
                            })
                            .collect(),
                    );
                }
                Outcome::Gather(Gather::MetricProviders) => {
                    obs.metric_providers = Some(ProviderCheck::Available)
                }
                Outcome::Gather(Gather::RolloutSlot) => obs.rollout_slot = Some(self.slot),
                Outcome::Gather(Gather::Hooks { hook_type, .. }) => {
                    obs.hooks.insert(hook_type, Vec::new());
                }
            }
        };
        for action in &decision.actions {
            match action {
                Action::EnsurePrimary if self.primary.is_none() => {
                    self.primary = Some(self.target.clone())
                }
                Action::ReconcileRoutes if self.routes.is_none() => {
                    self.routes = Some(Weights::ALL_PRIMARY)
                }
                Action::SetWeights { weights, .. } => self.routes = Some(*weights),
                Action::PromoteToPrimary => self.primary = Some(self.target.clone()),
                Action::Event {
                    event_type,
                    message,
                } => self.events.push((*event_type, message.clone())),
                _ => {}
            }
        }
        self.status = decision.next_state;
        self.now = self.now.plus(decision.requeue_after);
    }

    /// Ticks until the phase is one of `phases` (at most 200 ticks); the events of those ticks.
    fn run_until(
        &mut self,
        phases: &[Phase],
        metric: &dyn Fn(&str) -> MetricValue,
    ) -> Vec<(EventType, String)> {
        let first = self.events.len();
        for _ in 0..200 {
            self.tick(metric);
            if phases.contains(&self.status.phase) {
                return self.events[first..].to_vec();
            }
        }
        panic!(
            "still {:?} after 200 ticks: {:#?}",
            self.status.phase,
            &self.events[first..]
        );
    }

    fn release(&mut self, revision: &str) {
        self.target = revision.to_owned();
    }
}

fn healthy(name: &str) -> MetricValue {
    match name {
        "request-success-rate" => MetricValue::Value(100.0),
        _ => MetricValue::Value(42.0),
    }
}

/// The demo's second release: a third of the requests fail.
fn faulty(name: &str) -> MetricValue {
    match name {
        "request-success-rate" => MetricValue::Value(66.67),
        _ => MetricValue::Value(42.0),
    }
}

fn no_data(_: &str) -> MetricValue {
    MetricValue::NoData(None)
}

const DONE: &[Phase] = &[Phase::Succeeded, Phase::Failed];

/// The demo's Canary as its manifest says, with `edit` applied to the JSON first.
fn demo_canary(edit: impl FnOnce(&mut Value)) -> Result<CanarySpec, flagger_rollout::InvalidSpec> {
    let mut json: Value = yaml("src/demo/manifests/canary.yaml");
    edit(&mut json);
    let canary: Canary = serde_json::from_value(json).unwrap();
    canary_spec(&canary, MeshProvider::Istio)
}

/// The demo's story on the decision core: initialization, a healthy release, a faulty one; then
/// a release without data and an invalid spec. Every event text, in order.
fn core_event_texts() -> (Vec<String>, World) {
    let spec = demo_canary(|_| {}).unwrap();
    let mut world = World::new(spec);
    world.run_until(&[Phase::Initialized], &healthy);
    world.release("rev-2");
    let promoted = world.run_until(DONE, &healthy);
    assert_eq!(world.status.phase, Phase::Succeeded, "{promoted:#?}");
    world.release("rev-3");
    let rolled_back = world.run_until(DONE, &faulty);
    assert_eq!(world.status.phase, Phase::Failed, "{rolled_back:#?}");
    assert_eq!(world.primary.as_deref(), Some("rev-2"));
    // "the analysis halts five times and rolls back"
    let halts = rolled_back
        .iter()
        .filter(|(_, m)| m.starts_with("Halt "))
        .count();
    assert_eq!(halts, 5, "{rolled_back:#?}");

    // No data: failed checks, never a promotion.
    let mut silent = World::new(demo_canary(|_| {}).unwrap());
    silent.run_until(&[Phase::Initialized], &healthy);
    silent.release("rev-2");
    let events = silent.run_until(DONE, &no_data);
    assert_eq!(silent.status.phase, Phase::Failed, "{events:#?}");
    assert_eq!(silent.primary.as_deref(), Some("rev-1"));
    // Each check without data is a failed check; the threshold rolls it back.
    let no_values = events
        .iter()
        .filter(|(t, m)| {
            *t == EventType::Warning && m.starts_with("Halt advancement no values found")
        })
        .count();
    assert_eq!(no_values, 5, "{events:#?}");
    assert!(
        !events
            .iter()
            .any(|(_, m)| m.starts_with("Copying") || m.starts_with("Promotion")),
        "promoted without data: {events:#?}"
    );

    // An invalid spec: one Warning, a Valid=False condition, nothing else.
    let invalid = demo_canary(|c| c["spec"]["analysis"]["maxWeight"] = 150.into()).unwrap_err();
    let decision = decide_invalid(
        &invalid,
        &CanaryStatus::default(),
        &Observations::new(
            world.now,
            Observed::Missing,
            Observed::Missing,
            Observed::Missing,
        ),
    );
    assert!(
        decision.actions.iter().all(|a| matches!(
            a,
            Action::Event {
                event_type: EventType::Warning,
                ..
            } | Action::WriteStatus(_)
        )),
        "{:?}",
        decision.actions
    );
    let valid = decision
        .next_state
        .condition("Valid")
        .expect("Valid condition");
    assert_eq!(valid.status, ConditionStatus::False);

    let texts = world
        .events
        .iter()
        .chain(&silent.events)
        .map(|(_, m)| m.clone())
        .chain(decision.events().into_iter().map(str::to_owned))
        .collect();
    (texts, world)
}

/// Backticked spans of the demo and Troubleshooting texts that are not event texts, and where
/// they are checked.
const NOT_EVENTS: &[(&str, &str)] = &[
    ("test", "demo manifest"),
    ("stepWeight: 5", "demo manifest"),
    ("maxWeight: 50", "demo manifest"),
    ("minReadySeconds: 5", "demo manifest"),
    ("podinfo:1.4.1", "demo source"),
    ("podinfo:1.4.2", "demo source"),
    ("flagger run --kubeconfig ...", "command"),
    ("kubectl get canaries -A", "demo source"),
    ("kubectl describe canary/podinfo", "command"),
    ("kubectl describe canary/<name>", "command"),
    // tests/demo.rs runs the command the demo prints.
    (
        "kubectl --kubeconfig <path> get canaries -A --watch",
        "command",
    ),
    ("--keep", "demo flag"),
    ("src/demo/manifests/", "path"),
    ("Valid=False", "condition"),
];

#[test]
fn the_event_texts_the_readme_quotes_are_what_the_decision_core_emits() {
    let (events, _) = core_event_texts();
    let demo_source: String = ["src/demo/mod.rs", "src/demo/cluster.rs"]
        .iter()
        .map(|p| read(p))
        .collect();
    let manifests: String = std::fs::read_dir(readme::root().join("src/demo/manifests"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    let demo_help = {
        let out = Command::new(env!("CARGO_BIN_EXE_flagger"))
            .args(["demo", "--help"])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    let mut quoted_events = 0;
    for heading in ["Try it without a cluster", "Troubleshooting"] {
        for span in readme::backticked(&section(heading)) {
            let text = span.trim_end_matches("...").trim_end();
            if events.iter().any(|e| e.contains(text)) && text.len() > 12 {
                quoted_events += 1;
                continue;
            }
            let kind = NOT_EVENTS
                .iter()
                .find(|(s, _)| *s == span)
                .map(|(_, k)| *k)
                .unwrap_or_else(|| {
                    panic!(
                        "README ({heading}) quotes `{span}`: the decision core emits no such event \
                         and it is not a known non-event span. Events:\n{events:#?}"
                    )
                });
            match kind {
                "demo manifest" => assert!(manifests.contains(&span), "{span}"),
                "demo source" => assert!(demo_source.contains(&span), "{span}"),
                "demo flag" => assert!(demo_help.contains(&span), "{span}"),
                "path" => assert!(readme::root().join(&span).exists(), "{span}"),
                // Checked in core_event_texts (decide_invalid's Valid condition).
                "condition" => {}
                // Shown to the user, not produced by the code (tests/demo.rs runs the one the
                // demo prints).
                "command" => {}
                other => unreachable!("{other}"),
            }
        }
    }
    assert!(quoted_events >= 7, "only {quoted_events} event texts found");
}

#[test]
fn the_waiting_message_is_the_one_the_configuration_table_quotes() {
    let config = section("Configuration");
    let row = readme::table_rows(&config)
        .into_iter()
        .find(|r| r[0] == "`--max-concurrent-canaries`")
        .unwrap();
    let quoted = readme::backticked(&row[2])
        .into_iter()
        .find(|s| s.starts_with("waiting for a rollout slot"))
        .expect("the waiting message");
    assert!(readme::backticked(&row[2]).contains(&"Waiting".to_owned()));
    let mut world = World::new(demo_canary(|_| {}).unwrap());
    world.run_until(&[Phase::Initialized], &healthy);
    world.slot = RolloutSlot::Busy {
        in_progress: 2,
        limit: 3,
    };
    world.release("rev-2");
    world.run_until(&[Phase::Waiting], &healthy);
    let message = &world.status.condition("Promoted").unwrap().message;
    assert_eq!(*message, quoted.replace('K', "2").replace('N', "3"));
}

// ----- How it differs from upstream ---------------------------------------------------------------

/// Rows whose behaviour other tests show: (row, [file, test function]).
const DIFFERENCES_TESTED_BY: &[(&str, &[(&str, &str)])] = &[
    (
        "Manifests",
        &[
            (
                "actors/tests/crd_schema.rs",
                "canary_serves_v1alpha3_with_the_same_schema_but_stores_v1beta1",
            ),
            (
                "tests/e2e_lifecycle.rs",
                "seed_v1alpha3_canary_applied_with_kubectl_is_initialized",
            ),
        ],
    ),
    (
        "Generated objects",
        &[
            (
                "tests/e2e_lifecycle.rs",
                "initialization_creates_the_primary_services_and_routes",
            ),
            (
                "actors/tests/router_testbed.rs",
                "initialization_creates_services_virtual_service_and_destination_rules",
            ),
        ],
    ),
    (
        "Noticing a new revision",
        &[(
            "tests/e2e_lifecycle.rs",
            "new_revision_is_detected_within_two_seconds_with_a_30s_interval",
        )],
    ),
    (
        "Reads per steady tick",
        &[(
            // "Steady-state ticks ... no GET, no LIST, no write."
            "tests/e2e_lifecycle.rs",
            "config_map_change_is_analysed_and_promoted_to_the_primary_copy",
        )],
    ),
    (
        "A primary that never becomes ready after promotion",
        &[(
            "rollout/src/decide/tests.rs",
            "primary_never_ready_fails_the_promotion_with_traffic_on_the_canary",
        )],
    ),
    (
        "No metric data",
        &[
            (
                "rollout/src/decide/tests.rs",
                "metric_failures_halt_with_upstream_texts_and_count",
            ),
            (
                "tests/readme.rs",
                "the_event_texts_the_readme_quotes_are_what_the_decision_core_emits",
            ),
        ],
    ),
    (
        "Interval floor",
        &[
            (
                "rollout/src/spec/tests.rs",
                "interval_parses_go_durations_and_is_floored_at_one_second",
            ),
            ("tests/readme.rs", "the_differences_table_holds"),
        ],
    ),
    (
        "Weight overshoot",
        &[
            (
                "rollout/src/weights.rs",
                "linear_steps_reach_max_exactly_and_never_pass_it",
            ),
            ("tests/readme.rs", "the_differences_table_holds"),
        ],
    ),
    (
        "RBAC",
        &[
            (
                "tests/e2e_install.rs",
                "the_cluster_role_grants_every_call_and_the_readme_metrics_are_exported",
            ),
            (
                "tests/e2e_install.rs",
                "the_namespaced_role_grants_every_call_of_an_operator_watching_one_namespace",
            ),
            (
                "tests/charts.rs",
                "rbac_has_no_wildcards_and_is_namespaced_when_asked",
            ),
        ],
    ),
    (
        "Secrets in logs/events",
        &[(
            "tests/e2e_faults.rs",
            "secrets_never_appear_in_logs_events_or_admin_endpoints",
        )],
    ),
];

#[test]
fn the_differences_table_holds() {
    let rows = readme::table_rows(&section("How it differs from upstream Flagger"));
    let labels: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    let mapped: Vec<&str> = DIFFERENCES_TESTED_BY.iter().map(|(l, _)| *l).collect();
    assert_eq!(
        labels.len(),
        mapped.len(),
        "every row of the differences table names the tests that show it: {labels:?}"
    );
    for (label, name) in labels.iter().zip(&mapped) {
        assert!(label.starts_with(name), "row {label:?}, mapping {name:?}");
    }
    for (row, tests) in DIFFERENCES_TESTED_BY {
        for (file, function) in *tests {
            let source = read(file);
            assert!(
                source.contains(&format!("fn {function}(")),
                "{row}: {file} has no test {function}"
            );
        }
    }
    let ours = |label: &str| rows.iter().find(|r| r[0] == label).unwrap()[2].clone();

    // "Weight overshoot (`maxWeight: 50`, `stepWeight: 20`) | 20, 40, 60 | 20, 40, 50"
    let row = rows
        .iter()
        .find(|r| r[0].starts_with("Weight overshoot"))
        .unwrap();
    let setting = |key: &str| -> u64 {
        readme::backticked(&row[0])
            .iter()
            .find_map(|s| {
                s.strip_prefix(&format!("{key}: "))
                    .map(|v| v.parse().unwrap())
            })
            .unwrap_or_else(|| panic!("{key} in {row:?}"))
    };
    let (max, step) = (setting("maxWeight"), setting("stepWeight"));
    let spec = demo_canary(|c| {
        c["spec"]["analysis"]["maxWeight"] = max.into();
        c["spec"]["analysis"]["stepWeight"] = step.into();
    })
    .unwrap();
    let mut world = World::new(spec);
    world.run_until(&[Phase::Initialized], &healthy);
    world.release("rev-2");
    let advanced: Vec<String> = world
        .run_until(DONE, &healthy)
        .into_iter()
        .filter_map(|(_, m)| {
            m.strip_prefix("Advance podinfo.test canary weight ")
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(advanced.join(", "), row[2], "{row:?}");

    // "Interval floor | 10 s | 1 s": a shorter interval runs every second.
    let floor = ours("Interval floor");
    let seconds: u64 = floor.trim_end_matches(" s").parse().unwrap();
    let spec = demo_canary(|c| c["spec"]["analysis"]["interval"] = "100ms".into()).unwrap();
    assert_eq!(spec.analysis.interval.as_secs(), seconds);
    let mut world = World::new(spec);
    world.run_until(&[Phase::Initialized], &healthy);
    world.release("rev-2");
    let before = world.now.unix_millis();
    world.run_until(&[Phase::Progressing], &healthy);
    world.tick(&healthy);
    assert_eq!(world.status.canary_weight, 5, "one analysis tick advanced");
    assert_eq!(
        world.now.unix_millis() - before,
        2000 * seconds as i64,
        "two ticks of {seconds} s"
    );
}

// ----- Architecture and paths ---------------------------------------------------------------------

#[test]
fn the_architecture_table_names_existing_crates_and_actors() {
    let architecture = section("Architecture");
    for row in readme::table_rows(&architecture) {
        let path = readme::backticked(&row[0]).remove(0);
        let dir = readme::root().join(&path);
        assert!(dir.is_dir(), "{path} is not a directory");
        let names = readme::backticked(&row[1]);
        match path.as_str() {
            "src/" => {
                // The `flagger` binary and its subcommands.
                let cargo = read("Cargo.toml");
                assert!(cargo.contains("name = \"flagger\""));
                let help = Command::new(env!("CARGO_BIN_EXE_flagger"))
                    .arg("--help")
                    .output()
                    .unwrap();
                let help = String::from_utf8(help.stdout).unwrap();
                for sub in &names[1..] {
                    assert!(
                        help.lines()
                            .any(|l| l.trim_start().starts_with(&format!("{sub} "))),
                        "`flagger --help` has no subcommand {sub}"
                    );
                }
            }
            "charts/" => {
                for chart in &names {
                    let meta = yaml(&format!("charts/{chart}/Chart.yaml"));
                    assert_eq!(meta["name"], chart.as_str());
                }
            }
            _ => {
                let cargo: toml_lite::Package =
                    toml_lite::package(&read(&format!("{path}Cargo.toml")));
                assert_eq!(cargo.name, names[0], "{path}Cargo.toml");
            }
        }
    }
    // The diagram's actors are the crate's types.
    let known = [
        (
            "CanarySupervisor",
            std::any::type_name::<flagger_actors::supervisor::CanarySupervisor>(),
        ),
        (
            "CanaryActor",
            std::any::type_name::<flagger_actors::canary::CanaryActor>(),
        ),
        (
            "WorkloadActor",
            std::any::type_name::<flagger_actors::workload::WorkloadActor>(),
        ),
        (
            "RouterActor",
            std::any::type_name::<flagger_actors::router::RouterActor>(),
        ),
        (
            "MetricsActor",
            std::any::type_name::<flagger_actors::metrics::MetricsActor>(),
        ),
        (
            "WebhookActor",
            std::any::type_name::<flagger_actors::webhook::WebhookActor>(),
        ),
        (
            "NotifierActor",
            std::any::type_name::<flagger_actors::notifier::NotifierActor>(),
        ),
    ];
    let markdown = readme::readme();
    let diagram = readme::code_blocks(&markdown)
        .into_iter()
        .find(|b| b.section == "Architecture")
        .unwrap();
    let words: Vec<&str> = diagram
        .text
        .split(|c: char| !c.is_alphanumeric() && c != '_' && c != ':')
        .filter(|w| w.ends_with("Actor") || w.ends_with("Supervisor"))
        .collect();
    assert!(words.len() >= 7, "{words:?}");
    for word in words {
        let (_, type_name) = known
            .iter()
            .find(|(name, _)| *name == word)
            .unwrap_or_else(|| {
                panic!("the diagram names {word}, not an actor type of flagger-actors")
            });
        assert!(type_name.ends_with(&format!("::{word}")), "{type_name}");
    }
    assert!(diagram.text.contains("rollout::decide"));
    let _: fn(&CanarySpec, &CanaryStatus, &Observations) -> Outcome = flagger_rollout::decide;
}

/// `name = "..."` of a Cargo.toml's `[package]` (no TOML parser in the dependencies).
mod toml_lite {
    pub struct Package {
        pub name: String,
    }

    pub fn package(text: &str) -> Package {
        let mut in_package = false;
        for line in text.lines() {
            let line = line.trim();
            if line.starts_with('[') {
                in_package = line == "[package]";
            } else if in_package && let Some(v) = line.strip_prefix("name = ") {
                return Package {
                    name: v.trim_matches('"').to_owned(),
                };
            }
        }
        panic!("no [package] name");
    }
}

#[test]
fn every_path_the_readme_mentions_exists() {
    let markdown = readme::readme();
    let mut paths: Vec<String> = readme::backticked(&markdown)
        .into_iter()
        .filter(|s| {
            !s.contains(' ')
                && !s.contains('<')
                && !s.starts_with('/')
                && !s.contains("://")
                && (s.ends_with(".rs")
                    || s.ends_with('/')
                    || s.starts_with(".ci/")
                    || s.starts_with("scripts/"))
        })
        .collect();
    // Markdown links to files of the repository.
    for (i, chunk) in markdown.split("](").enumerate() {
        if i > 0 {
            let target = chunk.split(')').next().unwrap();
            if !target.contains("://") {
                paths.push(target.to_owned());
            }
        }
    }
    assert!(paths.len() >= 10, "{paths:?}");
    for path in &paths {
        assert!(
            readme::root().join(path).exists(),
            "README.md mentions {path}, which does not exist"
        );
    }
    // The test command and what CI runs.
    let markdown_blocks = readme::code_blocks(&markdown);
    let test = markdown_blocks
        .iter()
        .find(|b| b.section == "Test")
        .unwrap();
    let command = readme::commands(test).remove(0);
    assert_eq!(command, ["scripts/test"]);
    let ci = read(".ci/run");
    assert!(
        ci.lines().any(|l| l.trim() == "exec scripts/test"),
        ".ci/run does not run scripts/test:\n{ci}"
    );
}
