#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use serde_json::json;

/// The seed's Canary (podinfo.test, stepWeight 10, maxWeight 50, threshold 5, two builtin metrics,
/// one load-test webhook), as the CRD layer would hand it over.
fn seed() -> CanaryInput {
    CanaryInput {
        name: "podinfo".into(),
        namespace: "test".into(),
        target_ref: Some(ObjectRefInput {
            api_version: Some("apps/v1".into()),
            kind: Some("Deployment".into()),
            name: Some("podinfo".into()),
        }),
        autoscaler_ref: Some(AutoscalerRefInput {
            api_version: Some("autoscaling/v2beta1".into()),
            kind: Some("HorizontalPodAutoscaler".into()),
            name: Some("podinfo".into()),
            ..Default::default()
        }),
        progress_deadline_seconds: Some(60),
        service: Some(ServiceInput {
            port: Some(9898),
            gateways: vec![
                "public-gateway.istio-system.svc.cluster.local".into(),
                "mesh".into(),
            ],
            ..Default::default()
        }),
        analysis: Some(AnalysisInput {
            interval: Some("1m".into()),
            threshold: Some(5),
            max_weight: Some(50),
            step_weight: Some(10),
            metrics: vec![
                MetricInput {
                    name: Some("request-success-rate".into()),
                    threshold: Some(99.0),
                    interval: Some("1m".into()),
                    ..Default::default()
                },
                MetricInput {
                    name: Some("request-duration".into()),
                    threshold: Some(500.0),
                    interval: Some("30s".into()),
                    ..Default::default()
                },
            ],
            webhooks: vec![WebhookInput {
                name: Some("load-test".into()),
                url: Some("http://flagger-loadtester.test/".into()),
                timeout: Some("5s".into()),
                metadata: [(
                    "cmd".to_owned(),
                    "hey -z 1m -q 10 -c 2 http://podinfo-canary.test:9898/".to_owned(),
                )]
                .into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn fields_of(input: &CanaryInput) -> Vec<String> {
    match CanarySpec::new(input, MeshProvider::Istio) {
        Ok(_) => vec![],
        Err(e) => e.errors.into_iter().map(|e| e.field).collect(),
    }
}

#[test]
fn the_seed_canary_is_valid_with_upstream_defaults() {
    let spec = CanarySpec::new(&seed(), MeshProvider::Istio).unwrap();
    assert_eq!(spec.canary_id(), "podinfo.test");
    assert_eq!(spec.primary_id(), "podinfo-primary.test");
    assert_eq!(
        spec.service.name, "podinfo",
        "service name defaults to the target"
    );
    assert_eq!(spec.service.port_name, "http");
    assert_eq!(spec.service.target_port, PortRef::Number(9898));
    assert_eq!(spec.progress_deadline, Duration::from_secs(60));
    assert_eq!(spec.analysis.interval, Duration::from_secs(60));
    assert_eq!(spec.analysis.threshold, 5);
    assert_eq!(
        spec.analysis.strategy,
        Strategy::Canary(WeightSteps::Linear { step: 10, max: 50 })
    );
    let sr = &spec.analysis.metrics[0];
    assert_eq!(
        sr.source,
        MetricSource::Builtin(BuiltinMetric::RequestSuccessRate)
    );
    assert_eq!(
        sr.range,
        ThresholdRange {
            min: Some(99.0),
            max: None
        },
        "legacy threshold is a minimum for success rate"
    );
    let rd = &spec.analysis.metrics[1];
    assert_eq!(
        rd.range,
        ThresholdRange {
            min: None,
            max: Some(500.0)
        },
        "and a maximum for duration"
    );
    assert_eq!(rd.window, "30s");
    let hook = &spec.analysis.webhooks[0];
    assert_eq!(
        hook.hook_type,
        HookType::Rollout,
        "empty type means rollout"
    );
    assert_eq!(hook.timeout, Duration::from_secs(5));
    assert_eq!(
        spec.primary_autoscaler_name().as_deref(),
        Some("podinfo-primary")
    );
    assert!(!spec.skip_analysis);
}

#[test]
fn defaults_apply_when_fields_are_absent() {
    let mut input = seed();
    input.progress_deadline_seconds = None;
    let a = input.analysis.as_mut().unwrap();
    a.interval = None;
    a.threshold = None;
    a.max_weight = None;
    a.metrics[0].interval = None;
    a.webhooks[0].timeout = None;
    input.service.as_mut().unwrap().gateways.clear();
    let spec = CanarySpec::new(&input, MeshProvider::Istio).unwrap();
    assert_eq!(spec.progress_deadline, Duration::from_secs(600));
    assert_eq!(spec.analysis.interval, Duration::from_secs(60));
    assert_eq!(spec.analysis.threshold, 1);
    assert_eq!(
        spec.analysis.strategy,
        Strategy::Canary(WeightSteps::Linear { step: 10, max: 100 })
    );
    assert_eq!(spec.analysis.metrics[0].window, "1m");
    assert_eq!(spec.analysis.webhooks[0].timeout, Duration::from_secs(10));
    assert_eq!(spec.service.gateways, vec!["mesh".to_owned()]);
}

#[test]
fn interval_parses_go_durations_and_is_floored_at_one_second() {
    for (text, secs) in [
        ("30s", 30.0),
        ("1m30s", 90.0),
        ("500ms", 1.0),
        ("2m", 120.0),
    ] {
        let mut input = seed();
        input.analysis.as_mut().unwrap().interval = Some(text.into());
        let spec = CanarySpec::new(&input, MeshProvider::Istio).unwrap();
        assert_eq!(spec.analysis.interval.as_secs_f64(), secs, "{text}");
    }
}

#[test]
fn each_invalid_field_is_named() {
    type Edit = fn(&mut CanaryInput);
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "missing targetRef",
            |c| c.target_ref = None,
            "spec.targetRef",
        ),
        (
            "targetRef without name",
            |c| c.target_ref.as_mut().unwrap().name = None,
            "spec.targetRef.name",
        ),
        (
            "DaemonSet target",
            |c| c.target_ref.as_mut().unwrap().kind = Some("DaemonSet".into()),
            "spec.targetRef.kind",
        ),
        (
            "maxWeight 0",
            |c| c.analysis.as_mut().unwrap().max_weight = Some(0),
            "spec.analysis.maxWeight",
        ),
        (
            "maxWeight 150",
            |c| c.analysis.as_mut().unwrap().max_weight = Some(150),
            "spec.analysis.maxWeight",
        ),
        (
            "stepWeight 0",
            |c| c.analysis.as_mut().unwrap().step_weight = Some(0),
            "spec.analysis.stepWeight",
        ),
        (
            "stepWeight -5",
            |c| c.analysis.as_mut().unwrap().step_weight = Some(-5),
            "spec.analysis.stepWeight",
        ),
        (
            "stepWeight > maxWeight",
            |c| c.analysis.as_mut().unwrap().step_weight = Some(60),
            "spec.analysis.stepWeight",
        ),
        (
            "threshold 0",
            |c| c.analysis.as_mut().unwrap().threshold = Some(0),
            "spec.analysis.threshold",
        ),
        (
            "interval garbage",
            |c| c.analysis.as_mut().unwrap().interval = Some("soon".into()),
            "spec.analysis.interval",
        ),
        (
            "iterations 0",
            |c| {
                let a = c.analysis.as_mut().unwrap();
                a.step_weight = None;
                a.iterations = Some(0);
            },
            "spec.analysis.iterations",
        ),
        (
            "iterations with stepWeight",
            |c| c.analysis.as_mut().unwrap().iterations = Some(3),
            "spec.analysis",
        ),
        (
            "no step at all",
            |c| c.analysis.as_mut().unwrap().step_weight = None,
            "spec.analysis",
        ),
        (
            "stepWeights descending",
            |c| {
                let a = c.analysis.as_mut().unwrap();
                a.step_weight = None;
                a.step_weights = Some(vec![10, 5]);
            },
            "spec.analysis.stepWeights[1]",
        ),
        (
            "stepWeights above 100",
            |c| {
                let a = c.analysis.as_mut().unwrap();
                a.step_weight = None;
                a.step_weights = Some(vec![10, 120]);
            },
            "spec.analysis.stepWeights[1]",
        ),
        (
            "unknown provider",
            |c| c.provider = Some("istoi".into()),
            "spec.provider",
        ),
        (
            "unsupported provider",
            |c| c.provider = Some("linkerd".into()),
            "spec.provider",
        ),
        ("missing service", |c| c.service = None, "spec.service"),
        (
            "port 0",
            |c| c.service.as_mut().unwrap().port = Some(0),
            "spec.service.port",
        ),
        (
            "progress deadline 0",
            |c| c.progress_deadline_seconds = Some(0),
            "spec.progressDeadlineSeconds",
        ),
        (
            "unknown webhook type",
            |c| c.analysis.as_mut().unwrap().webhooks[0].hook_type = Some("pre-rolout".into()),
            "spec.analysis.webhooks[0].type",
        ),
        (
            "webhook timeout garbage",
            |c| c.analysis.as_mut().unwrap().webhooks[0].timeout = Some("5 sec".into()),
            "spec.analysis.webhooks[0].timeout",
        ),
        (
            "webhook without url",
            |c| c.analysis.as_mut().unwrap().webhooks[0].url = None,
            "spec.analysis.webhooks[0].url",
        ),
        (
            "custom metric without query",
            |c| c.analysis.as_mut().unwrap().metrics[0].name = Some("error-budget".into()),
            "spec.analysis.metrics[0].templateRef",
        ),
        (
            "metric interval garbage",
            |c| c.analysis.as_mut().unwrap().metrics[1].interval = Some("1 minute".into()),
            "spec.analysis.metrics[1].interval",
        ),
        (
            "alert severity",
            |c| {
                c.analysis.as_mut().unwrap().alerts = vec![AlertInput {
                    name: Some("on-call".into()),
                    severity: Some("critical".into()),
                    provider_name: Some("slack".into()),
                    ..Default::default()
                }]
            },
            "spec.analysis.alerts[0].severity",
        ),
        (
            "autoscaler kind",
            |c| c.autoscaler_ref.as_mut().unwrap().kind = Some("ScaledObject".into()),
            "spec.autoscalerRef.kind",
        ),
    ];
    for (what, edit, field) in cases {
        let mut input = seed();
        edit(&mut input);
        let fields = fields_of(&input);
        assert!(
            fields.iter().any(|f| f == field),
            "{what}: expected an error on {field}, got {fields:?}"
        );
    }
}

#[test]
fn free_form_istio_blocks_are_checked_where_the_user_wrote_them() {
    let mut input = seed();
    let a = input.analysis.as_mut().unwrap();
    a.matches = vec![json!({"headers": {"x-canary": "insider"}})];
    a.session_affinity = Some(json!({"cookieName": "c", "primaryCookieName": "c"}));
    let s = input.service.as_mut().unwrap();
    s.matches = vec![json!({"uri": {"prefix": "/"}}), json!("/api")];
    s.cors_policy = Some(json!({"allowOrigins": [{"exact": 7}]}));
    assert_eq!(
        fields_of(&input),
        vec![
            "spec.service.match[1]",
            "spec.service.corsPolicy.allowOrigins[0].exact",
            "spec.analysis.match[0].headers.x-canary",
            "spec.analysis.sessionAffinity.primaryCookieName",
        ]
    );
}

#[test]
fn cross_namespace_references_are_refused_only_when_asked() {
    let mut input = seed();
    let a = input.analysis.as_mut().unwrap();
    a.metrics.push(MetricInput {
        name: Some("errors".into()),
        template_ref: Some(TemplateRefInput {
            name: Some("errors".into()),
            namespace: Some("shared".into()),
        }),
        ..Default::default()
    });
    a.alerts.push(AlertInput {
        name: Some("on-call".into()),
        provider_name: Some("slack".into()),
        provider_namespace: Some("shared".into()),
        ..Default::default()
    });
    // Same namespace written out explicitly: always fine.
    a.alerts.push(AlertInput {
        name: Some("team".into()),
        provider_name: Some("slack".into()),
        provider_namespace: Some("test".into()),
        ..Default::default()
    });
    let allowed = CanarySpec::new(&input, MeshProvider::Istio).unwrap();
    assert_eq!(
        allowed.analysis.metrics[2].source,
        MetricSource::Template {
            name: "errors".into(),
            namespace: "shared".into()
        }
    );
    let options = ValidationOptions {
        default_provider: MeshProvider::Istio,
        no_cross_namespace_refs: true,
    };
    let err = CanarySpec::new_with(&input, options).unwrap_err();
    assert_eq!(
        err.fields(),
        vec![
            "spec.analysis.metrics[2].templateRef.namespace",
            "spec.analysis.alerts[0].providerRef.namespace",
        ]
    );
    assert_eq!(
        err.errors[0].problem,
        "can't access metric template errors.shared, cross-namespace references are blocked (--no-cross-namespace-refs)"
    );
    assert_eq!(
        err.errors[1].problem,
        "can't access alert provider slack.shared, cross-namespace references are blocked (--no-cross-namespace-refs)"
    );
}

#[test]
fn all_problems_are_reported_at_once_and_messages_are_readable() {
    let mut input = seed();
    input.target_ref = None;
    input.analysis.as_mut().unwrap().max_weight = Some(101);
    let err = CanarySpec::new(&input, MeshProvider::Istio).unwrap_err();
    assert_eq!(
        err.fields(),
        vec!["spec.targetRef", "spec.analysis.maxWeight"]
    );
    assert_eq!(
        err.to_string(),
        "invalid canary spec: spec.targetRef: is required; spec.analysis.maxWeight: must be within 1-100, got 101"
    );
}

#[test]
fn provider_names_are_checked_and_listed() {
    assert_eq!("istio".parse::<MeshProvider>(), Ok(MeshProvider::Istio));
    let err = "istoi".parse::<MeshProvider>().unwrap_err().to_string();
    assert!(err.contains("valid providers: istio, kubernetes"), "{err}");
    let err = "linkerd".parse::<MeshProvider>().unwrap_err().to_string();
    assert!(err.contains("does not support"), "{err}");
}

#[test]
fn no_analysis_means_skip_analysis() {
    let mut input = seed();
    input.analysis = None;
    let spec = CanarySpec::new(&input, MeshProvider::Istio).unwrap();
    assert!(spec.skip_analysis);
}

#[test]
fn iterations_select_blue_green_or_ab_testing() {
    let mut input = seed();
    let a = input.analysis.as_mut().unwrap();
    a.step_weight = None;
    a.max_weight = None;
    a.iterations = Some(10);
    let spec = CanarySpec::new(&input, MeshProvider::Istio).unwrap();
    assert_eq!(
        spec.analysis.strategy,
        Strategy::BlueGreen { iterations: 10 }
    );
    input.analysis.as_mut().unwrap().matches =
        vec![serde_json::json!({"headers": {"x-canary": {"exact": "insider"}}})];
    let spec = CanarySpec::new(&input, MeshProvider::Istio).unwrap();
    assert_eq!(
        spec.analysis.strategy,
        Strategy::AbTesting { iterations: 10 }
    );
    assert_eq!(spec.analysis.strategy.label(), "ab-testing");
}

#[test]
fn the_kubernetes_provider_forces_blue_green_with_ten_iterations() {
    let mut input = seed();
    input.provider = Some("kubernetes".into());
    let spec = CanarySpec::new(&input, MeshProvider::Istio).unwrap();
    assert_eq!(
        spec.analysis.strategy,
        Strategy::BlueGreen { iterations: 10 }
    );
    assert!(
        spec.warnings
            .iter()
            .any(|w| w == "Setting canaryAnalysis.iterations: 10")
    );
}

#[test]
fn explicit_step_weights_set_the_max() {
    let mut input = seed();
    let a = input.analysis.as_mut().unwrap();
    a.step_weight = None;
    a.step_weights = Some(vec![1, 2, 10, 80]);
    let spec = CanarySpec::new(&input, MeshProvider::Istio).unwrap();
    match spec.analysis.strategy {
        Strategy::Canary(steps) => assert_eq!(steps.max_weight(), 80),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn metric_thresholds_are_inclusive() {
    let spec = CanarySpec::new(&seed(), MeshProvider::Istio).unwrap();
    let sr = &spec.analysis.metrics[0];
    assert!(sr.accepts(99.0));
    assert!(sr.accepts(100.0));
    assert!(!sr.accepts(98.99));
    assert!(!sr.accepts(f64::NAN));
    let rd = &spec.analysis.metrics[1];
    assert!(rd.accepts(500.0));
    assert!(!rd.accepts(500.5));
}

#[test]
fn alert_severity_filter() {
    assert!(Severity::Info.delivers(Severity::Info));
    assert!(Severity::Warn.delivers(Severity::Error));
    assert!(!Severity::Warn.delivers(Severity::Info));
    assert!(!Severity::Error.delivers(Severity::Warn));
    assert_eq!("".parse::<Severity>(), Ok(Severity::Info));
}
