//! Canary objects -> validated rollout specs: the seed's v1alpha3 manifest, upstream's v1beta1
//! examples, legacy threshold semantics, tolerance of odd input, and field-named errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use flagger_actors::crd::convert::{canary_input, canary_spec, uses_legacy_analysis};
use flagger_actors::crd::{Canary, CanaryPhase, CanaryStatus};
use flagger_rollout::spec::{
    BuiltinMetric, HookType, MeshProvider, MetricSource, PortRef, Severity, Strategy, TargetKind,
};
use flagger_rollout::weights::WeightSteps;
use serde_json::{Value, json};

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn canary(value: Value) -> Canary {
    serde_json::from_value(value).unwrap()
}

#[test]
fn seed_v1alpha3_canary_converts_with_legacy_threshold_semantics() {
    let c = canary(fixture("podinfo-canary-v1alpha3.yaml"));
    assert!(uses_legacy_analysis(&c));
    let spec = canary_spec(&c, MeshProvider::Istio).unwrap();

    assert_eq!(
        (spec.name.as_str(), spec.namespace.as_str()),
        ("podinfo", "test")
    );
    assert_eq!(spec.provider, MeshProvider::Istio);
    assert_eq!(spec.target_ref.kind, TargetKind::Deployment);
    assert_eq!(spec.target_ref.name, "podinfo");
    assert_eq!(spec.autoscaler_ref.as_ref().unwrap().name, "podinfo");
    assert_eq!(spec.progress_deadline, Duration::from_secs(60));
    assert!(!spec.skip_analysis);

    assert_eq!(spec.service.name, "podinfo");
    assert_eq!(spec.service.port, 9898);
    assert_eq!(spec.service.port_name, "http");
    assert_eq!(spec.service.target_port, PortRef::Number(9898));
    assert_eq!(
        spec.service.gateways,
        ["public-gateway.istio-system.svc.cluster.local", "mesh"]
    );
    assert_eq!(spec.service.hosts, ["app.istio.example.com"]);
    assert_eq!(
        spec.service.traffic_policy,
        Some(json!({"tls": {"mode": "DISABLE"}}))
    );

    let a = &spec.analysis;
    assert_eq!(a.interval, Duration::from_secs(60));
    assert_eq!(a.threshold, 5);
    assert_eq!(
        a.strategy,
        Strategy::Canary(WeightSteps::Linear { step: 10, max: 50 })
    );

    // v1alpha3 `threshold`: a minimum for the success rate (percent), a maximum for the duration (ms).
    let [success, duration] = &a.metrics[..] else {
        panic!("two metrics: {:?}", a.metrics)
    };
    assert_eq!(
        success.source,
        MetricSource::Builtin(BuiltinMetric::RequestSuccessRate)
    );
    assert_eq!((success.range.min, success.range.max), (Some(99.0), None));
    assert_eq!(success.window, "1m");
    assert!(success.accepts(99.5) && !success.accepts(98.9));
    assert_eq!(
        duration.source,
        MetricSource::Builtin(BuiltinMetric::RequestDuration)
    );
    assert_eq!(
        (duration.range.min, duration.range.max),
        (None, Some(500.0))
    );
    assert_eq!(duration.window, "30s");
    assert!(duration.accepts(499.0) && !duration.accepts(501.0));

    let [hook] = &a.webhooks[..] else {
        panic!("one webhook: {:?}", a.webhooks)
    };
    assert_eq!(hook.name, "load-test");
    assert_eq!(hook.hook_type, HookType::Rollout);
    assert_eq!(hook.url, "http://flagger-loadtester.test/");
    assert_eq!(hook.timeout, Duration::from_secs(5));
    assert_eq!(
        hook.metadata.get("cmd").map(String::as_str),
        Some("hey -z 1m -q 10 -c 2 http://podinfo-canary.test:9898/")
    );
}

#[test]
fn upstream_istio_tutorial_canary_converts() {
    let c = canary(fixture("podinfo-canary-v1beta1.yaml"));
    assert!(!uses_legacy_analysis(&c));
    let spec = canary_spec(&c, MeshProvider::Istio).unwrap();
    assert_eq!(spec.service.target_port, PortRef::Number(9898));
    assert_eq!(
        spec.service.retries,
        Some(json!({
            "attempts": 3,
            "perTryTimeout": "1s",
            "retryOn": "gateway-error,connect-failure,refused-stream"
        }))
    );
    let a = &spec.analysis;
    assert_eq!(
        a.strategy,
        Strategy::Canary(WeightSteps::Linear { step: 10, max: 50 })
    );
    assert_eq!(
        (a.metrics[0].range.min, a.metrics[1].range.max),
        (Some(99.0), Some(500.0))
    );
    let hooks: Vec<_> = a
        .webhooks
        .iter()
        .map(|w| (w.name.as_str(), w.hook_type, w.timeout))
        .collect();
    assert_eq!(
        hooks,
        [
            (
                "acceptance-test",
                HookType::PreRollout,
                Duration::from_secs(30)
            ),
            ("load-test", HookType::Rollout, Duration::from_secs(5)),
        ]
    );
}

#[test]
fn ab_testing_canary_with_template_alerts_and_gate_converts() {
    let c = canary(fixture("podinfo-ab-v1beta1.yaml"));
    let spec = canary_spec(&c, MeshProvider::Istio).unwrap();
    assert_eq!(spec.service.target_port, PortRef::Name("http".to_owned()));
    assert_eq!(
        spec.service.headers,
        Some(json!({"request": {"add": {"x-envoy-upstream-rq-timeout-ms": "15000"}}}))
    );
    assert_eq!(
        spec.service.cors_policy,
        Some(json!({"allowOrigin": ["example.com"], "allowMethods": ["GET"], "maxAge": "24h"}))
    );
    assert_eq!(
        spec.service.apex,
        Some(
            json!({"labels": {"test": "labels-test"}, "annotations": {"test": "annotations-test"}})
        )
    );
    let a = &spec.analysis;
    assert_eq!(a.strategy, Strategy::AbTesting { iterations: 10 });
    assert_eq!(a.interval, Duration::from_secs(30));
    assert_eq!(a.matches.len(), 2);
    assert_eq!(
        a.matches[0],
        json!({"headers": {"x-canary": {"regex": ".*insider.*"}}})
    );

    let template = &a.metrics[1];
    assert_eq!(
        template.source,
        MetricSource::Template {
            name: "error-rate".into(),
            namespace: "istio-system".into()
        }
    );
    assert_eq!(template.range.max, Some(1.0));
    assert_eq!(
        template.template_variables.get("route").map(String::as_str),
        Some("/api")
    );

    let gate = &a.webhooks[0];
    assert_eq!(
        (gate.hook_type, gate.mute_alert),
        (HookType::ConfirmPromotion, true)
    );
    assert_eq!(a.webhooks[1].retries, 2);

    let [alert] = &a.alerts[..] else {
        panic!("one alert")
    };
    assert_eq!(alert.severity, Severity::Error);
    assert_eq!(
        (
            alert.provider_name.as_str(),
            alert.provider_namespace.as_str()
        ),
        ("on-call", "flagger")
    );
}

#[test]
fn analysis_wins_over_canary_analysis_when_both_are_set() {
    let mut manifest = fixture("podinfo-canary-v1beta1.yaml");
    manifest["spec"]["canaryAnalysis"] =
        json!({"interval": "10s", "threshold": 1, "iterations": 3});
    let c = canary(manifest);
    assert!(!uses_legacy_analysis(&c));
    let spec = canary_spec(&c, MeshProvider::Istio).unwrap();
    assert_eq!(spec.analysis.interval, Duration::from_secs(60));
    assert!(matches!(spec.analysis.strategy, Strategy::Canary(_)));
}

#[test]
fn no_analysis_at_all_means_skip_analysis() {
    let mut manifest = fixture("podinfo-canary-v1beta1.yaml");
    manifest["spec"].as_object_mut().unwrap().remove("analysis");
    let spec = canary_spec(&canary(manifest), MeshProvider::Istio).unwrap();
    assert!(spec.skip_analysis);
}

#[test]
fn provider_defaults_to_the_operator_flag_and_unknown_providers_name_the_field() {
    let c = canary(fixture("podinfo-canary-v1beta1.yaml"));
    assert_eq!(
        canary_spec(&c, MeshProvider::Kubernetes).unwrap().provider,
        MeshProvider::Kubernetes
    );

    let mut manifest = fixture("podinfo-canary-v1beta1.yaml");
    manifest["spec"]["provider"] = json!("istoi");
    let err = canary_spec(&canary(manifest), MeshProvider::Istio).unwrap_err();
    assert_eq!(err.fields(), ["spec.provider"]);
    assert!(
        err.to_string()
            .contains("valid providers: istio, kubernetes"),
        "{err}"
    );
}

#[test]
fn invalid_specs_name_the_field_the_user_wrote() {
    let cases: [(&str, &str, Value, &str); 6] = [
        (
            "podinfo-canary-v1beta1.yaml",
            "/spec/analysis/maxWeight",
            json!(150),
            "spec.analysis.maxWeight",
        ),
        (
            "podinfo-canary-v1alpha3.yaml",
            "/spec/canaryAnalysis/maxWeight",
            json!(150),
            "spec.canaryAnalysis.maxWeight",
        ),
        (
            "podinfo-canary-v1alpha3.yaml",
            "/spec/canaryAnalysis/threshold",
            json!(0),
            "spec.canaryAnalysis.threshold",
        ),
        (
            "podinfo-canary-v1beta1.yaml",
            "/spec/analysis/interval",
            json!("soon"),
            "spec.analysis.interval",
        ),
        (
            "podinfo-canary-v1beta1.yaml",
            "/spec/targetRef/kind",
            json!("DaemonSet"),
            "spec.targetRef.kind",
        ),
        (
            "podinfo-canary-v1beta1.yaml",
            "/spec/analysis/webhooks/0/timeout",
            json!("fast"),
            "spec.analysis.webhooks[0].timeout",
        ),
    ];
    for (file, pointer, value, field) in cases {
        let mut manifest = fixture(file);
        *manifest.pointer_mut(pointer).unwrap() = value;
        let err = canary_spec(&canary(manifest), MeshProvider::Istio).unwrap_err();
        assert_eq!(err.fields(), [field], "{file} {pointer}: {err}");
        assert_eq!(
            (err.name.as_str(), err.namespace.as_str()),
            ("podinfo", "test")
        );
    }
}

#[test]
fn missing_target_ref_is_a_field_error_not_a_deserialisation_failure() {
    let mut manifest = fixture("podinfo-canary-v1beta1.yaml");
    manifest["spec"]
        .as_object_mut()
        .unwrap()
        .remove("targetRef");
    let err = canary_spec(&canary(manifest), MeshProvider::Istio).unwrap_err();
    assert_eq!(err.fields(), ["spec.targetRef"]);
}

#[test]
fn unknown_fields_and_missing_required_names_still_deserialise() {
    // What a cluster without schema validation could hand us: typos, future fields, no names.
    let c = canary(json!({
        "apiVersion": "flagger.app/v1beta1",
        "kind": "Canary",
        "metadata": {"name": "odd", "namespace": "test"},
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "odd", "extra": 1},
            "service": {"port": 80, "someNewField": {"a": 1}},
            "analysis": {
                "interval": "30s", "threshold": 2, "stepWeight": 20, "maxWeight": 60,
                "metrics": [{"thresholdRange": {"min": 1}}],
                "webhooks": [{"url": "http://hook/"}],
                "futureKnob": true
            },
            "someFutureSpecField": "x"
        },
        "status": {"phase": "SomethingNew", "canaryWeight": 20, "unknownStatus": 1}
    }));
    assert_eq!(c.status.as_ref().unwrap().phase, None);
    assert_eq!(c.status.as_ref().unwrap().canary_weight, Some(20));
    let err = canary_spec(&c, MeshProvider::Istio).unwrap_err();
    assert_eq!(
        err.fields(),
        [
            "spec.analysis.metrics[0].name",
            "spec.analysis.webhooks[0].name"
        ],
        "{err}"
    );
}

#[test]
fn status_phase_reads_upstream_values_and_never_fails_on_unknown_ones() {
    let phase = |p: &str| -> Option<CanaryPhase> {
        serde_json::from_value::<CanaryStatus>(json!({"phase": p}))
            .unwrap()
            .phase
    };
    assert_eq!(phase("Progressing"), Some(CanaryPhase::Progressing));
    assert_eq!(
        phase("WaitingPromotion"),
        Some(CanaryPhase::WaitingPromotion)
    );
    assert_eq!(phase("Finalising"), Some(CanaryPhase::Finalising));
    assert_eq!(phase(""), None);
    assert_eq!(phase("Exploded"), None);
    let written = serde_json::to_value(CanaryStatus {
        phase: Some(CanaryPhase::Succeeded),
        canary_weight: Some(0),
        ..CanaryStatus::default()
    })
    .unwrap();
    assert_eq!(written, json!({"phase": "Succeeded", "canaryWeight": 0}));
}

/// JSON with every number as a float, so `99` and `99.0` compare equal as they do on the wire.
fn normalise_numbers(v: &Value) -> Value {
    match v {
        Value::Number(n) => json!(n.as_f64().unwrap()),
        Value::Array(items) => Value::Array(items.iter().map(normalise_numbers).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), normalise_numbers(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[test]
fn serialising_a_canary_writes_back_what_was_read_and_no_nulls() {
    for file in [
        "podinfo-canary-v1alpha3.yaml",
        "podinfo-canary-v1beta1.yaml",
        "podinfo-ab-v1beta1.yaml",
    ] {
        let manifest = fixture(file);
        let written = serde_json::to_value(canary(manifest.clone())).unwrap();
        assert_eq!(
            normalise_numbers(&written["spec"]),
            normalise_numbers(&manifest["spec"]),
            "{file}"
        );
    }
}

#[test]
fn conversion_input_keeps_what_the_user_wrote() {
    let input = canary_input(&canary(fixture("podinfo-canary-v1alpha3.yaml")));
    let analysis = input.analysis.unwrap();
    assert_eq!(analysis.metrics[0].threshold, Some(99.0));
    assert_eq!(analysis.metrics[0].threshold_min, None);
    assert_eq!(input.progress_deadline_seconds, Some(60));
}

mod status {
    use super::*;
    use flagger_actors::crd::convert::{status_from_crd, status_merge_patch, status_to_crd};
    use flagger_rollout::phase::Phase;
    use flagger_rollout::status::{
        CanaryStatus as DomainStatus, Condition, ConditionStatus, ProgressWaits, Timestamp, Wait,
    };

    /// `2019-01-16T14:05:07Z` in Unix milliseconds.
    const T0: i64 = 1_547_647_507_000;

    fn upstream_status() -> Value {
        // As upstream Flagger writes it (Go time format, omitempty strings).
        json!({
            "phase": "Progressing",
            "canaryWeight": 10,
            "failedChecks": 1,
            "iterations": 0,
            "lastAppliedSpec": "5d4f8b7c9",
            "lastPromotedSpec": "6c8d9e0f1",
            "lastTransitionTime": "2019-01-16T14:05:07Z",
            "trackedConfigs": {"configmap/podinfo-config": "a1b2c3"},
            "conditions": [{
                "type": "Promoted",
                "status": "Unknown",
                "lastUpdateTime": "2019-01-16T14:05:07Z",
                "lastTransitionTime": "2019-01-16T14:04:07Z",
                "reason": "Progressing",
                "message": "New revision detected, progressing canary analysis."
            }]
        })
    }

    fn read(value: Value) -> DomainStatus {
        let crd: CanaryStatus = serde_json::from_value(value).unwrap();
        status_from_crd(Some(&crd))
    }

    #[test]
    fn a_status_written_by_upstream_flagger_resumes() {
        let s = read(upstream_status());
        assert_eq!(s.phase, Phase::Progressing);
        assert_eq!((s.canary_weight, s.failed_checks, s.iterations), (10, 1, 0));
        assert_eq!(s.last_applied_spec, "5d4f8b7c9");
        assert_eq!(s.last_promoted_spec, "6c8d9e0f1");
        assert_eq!(
            s.last_transition_time,
            Some(Timestamp::from_unix_millis(T0))
        );
        assert_eq!(
            s.tracked_configs
                .get("configmap/podinfo-config")
                .map(String::as_str),
            Some("a1b2c3")
        );
        assert_eq!(
            s.conditions,
            [Condition {
                condition_type: "Promoted".into(),
                status: ConditionStatus::Unknown,
                reason: "Progressing".into(),
                message: "New revision detected, progressing canary analysis.".into(),
                last_update_time: Timestamp::from_unix_millis(T0),
                last_transition_time: Timestamp::from_unix_millis(T0 - 60_000),
            }]
        );
        assert_eq!(s.progress_waits, ProgressWaits::default());
    }

    #[test]
    fn no_status_is_a_new_canary() {
        assert_eq!(status_from_crd(None), DomainStatus::default());
        assert_eq!(read(json!({})).phase, Phase::Initializing);
        assert_eq!(read(json!({"phase": ""})).phase, Phase::Initializing);
    }

    #[test]
    fn odd_values_are_clamped_or_dropped_never_an_error() {
        let s = read(json!({
            "phase": "Succeeded",
            "canaryWeight": 150,
            "failedChecks": -2,
            "iterations": -1,
            "conditions": [
                {"type": "Promoted", "status": "Maybe"},
                {"status": "True"},
                {"type": "Promoted", "status": "True", "reason": "Succeeded"}
            ],
            "progressWaits": {"canary": {"since": "2019-01-16T14:05:07Z"}}
        }));
        assert_eq!(
            (s.canary_weight, s.failed_checks, s.iterations),
            (100, 0, 0)
        );
        assert_eq!(s.conditions.len(), 1);
        assert_eq!(s.conditions[0].status, ConditionStatus::True);
        assert_eq!(
            s.progress_waits.canary, None,
            "a wait without deadline is no wait"
        );
    }

    fn domain_status() -> DomainStatus {
        DomainStatus {
            phase: Phase::Promoting,
            canary_weight: 50,
            failed_checks: 2,
            iterations: 3,
            last_applied_spec: "rev-2".into(),
            last_promoted_spec: "rev-1".into(),
            last_transition_time: Some(Timestamp::from_unix_millis(T0)),
            tracked_configs: [("secret/db".to_owned(), "ff00".to_owned())].into(),
            conditions: vec![Condition {
                condition_type: "Promoted".into(),
                status: ConditionStatus::Unknown,
                reason: "Promoting".into(),
                message: "Canary analysis completed, starting primary rolling update.".into(),
                last_update_time: Timestamp::from_unix_millis(T0),
                last_transition_time: Timestamp::from_unix_millis(T0 - 1000),
            }],
            progress_waits: ProgressWaits {
                primary: Some(Wait {
                    since: Timestamp::from_unix_millis(T0),
                    deadline: Timestamp::from_unix_millis(T0 + 600_000),
                }),
                canary: None,
            },
        }
    }

    #[test]
    fn status_survives_a_write_and_a_read_through_the_api() {
        let original = domain_status();
        let json = serde_json::to_value(status_to_crd(&original)).unwrap();
        assert_eq!(json["phase"], "Promoting");
        assert_eq!(json["lastTransitionTime"], "2019-01-16T14:05:07Z");
        assert_eq!(
            json["progressWaits"]["primary"]["deadline"],
            "2019-01-16T14:15:07Z"
        );
        assert_eq!(json["conditions"][0]["status"], "Unknown");
        assert_eq!(read(json), original);
    }

    #[test]
    fn a_fresh_status_writes_counters_but_no_empty_strings() {
        let json = serde_json::to_value(status_to_crd(&DomainStatus::default())).unwrap();
        assert_eq!(
            json,
            json!({"phase": "Initializing", "canaryWeight": 0, "failedChecks": 0, "iterations": 0})
        );
    }

    /// RFC 7386 JSON merge patch, as the API server applies it.
    fn merge(target: &mut Value, patch: &Value) {
        match (target.as_object_mut(), patch.as_object()) {
            (Some(t), Some(p)) => {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
            _ => *target = patch.clone(),
        }
    }

    #[test]
    fn merge_patch_clears_what_the_new_status_no_longer_has_and_keeps_cookies() {
        let mut object = json!({"status": upstream_status()});
        object["status"]["sessionAffinityCookie"] = json!("flagger-cookie=abcdefghij");
        object["status"]["progressWaits"] = json!({
            "canary": {"since": "2019-01-16T14:00:00Z", "deadline": "2019-01-16T14:10:00Z"}
        });
        let mut next = domain_status();
        next.tracked_configs.clear();
        next.last_applied_spec.clear();
        merge(&mut object, &status_merge_patch(&next));

        let status = &object["status"];
        assert_eq!(status["sessionAffinityCookie"], "flagger-cookie=abcdefghij");
        assert!(status.get("trackedConfigs").is_none());
        assert!(status.get("lastAppliedSpec").is_none());
        assert!(status["progressWaits"].get("canary").is_none(), "{status}");
        assert_eq!(read(status.clone()), next);
    }
}
