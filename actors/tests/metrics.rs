//! MetricsActor against a fake Prometheus on 127.0.0.1.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod sink;

use std::collections::BTreeMap;
use std::time::Duration;

use actix::{Actor, Addr};
use flagger_actors::crd::metric_template::{MetricProvider, SecretRef};
use flagger_actors::key::CanaryKey;
use flagger_actors::metrics::{
    CheckProviders, MetricQuery, MetricReply, MetricsActor, MetricsConfig, MetricsError,
    MetricsServer, PrometheusAuth, PrometheusServer, QueryOrigin, ResolvedTemplate, RunQueries,
};
use flagger_actors::secret::SecretString;
use flagger_rollout::{
    AnalysisInput, BuiltinMetric, CanaryInput, CanarySpec, MeshProvider, MetricInput,
    MetricOutcome, MetricValue, ObjectRefInput, ProviderCheck, ServiceInput, TemplateRefInput,
};
use sink::{Reply, Sink, closed_port_url};

fn vector(value: &str) -> String {
    format!(
        r#"{{"status":"success","data":{{"resultType":"vector","result":[{{"metric":{{}},"value":[1700000000,"{value}"]}}]}}}}"#
    )
}

const EMPTY: &str = r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;

fn key() -> CanaryKey {
    CanaryKey::new("test", "podinfo")
}

fn query(metric: &str, server: &MetricsServer, q: &str) -> MetricQuery {
    MetricQuery {
        metric: metric.to_owned(),
        origin: QueryOrigin::Inline,
        server: server.clone(),
        query: q.to_owned(),
        scale: 1.0,
    }
}

fn actor(config: MetricsConfig) -> Addr<MetricsActor> {
    MetricsActor::new(config).start()
}

async fn run(addr: &Addr<MetricsActor>, queries: Vec<MetricQuery>) -> Vec<MetricReply> {
    addr.send(RunQueries {
        canary: key(),
        queries,
    })
    .await
    .unwrap()
}

fn spec(metrics: Vec<MetricInput>) -> CanarySpec {
    let input = CanaryInput {
        name: "podinfo".into(),
        namespace: "test".into(),
        target_ref: Some(ObjectRefInput {
            api_version: Some("apps/v1".into()),
            kind: Some("Deployment".into()),
            name: Some("podinfo".into()),
        }),
        service: Some(ServiceInput {
            port: Some(9898),
            ..Default::default()
        }),
        analysis: Some(AnalysisInput {
            interval: Some("1m".into()),
            threshold: Some(5),
            max_weight: Some(50),
            step_weight: Some(10),
            metrics,
            ..Default::default()
        }),
        ..Default::default()
    };
    CanarySpec::new(&input, MeshProvider::Istio).unwrap()
}

#[actix::test]
async fn builtin_success_rate_sends_upstream_query_and_reads_the_value() {
    let prom = Sink::always(Reply::ok(vector("99.5")));
    let spec = spec(vec![MetricInput {
        name: Some("request-success-rate".into()),
        interval: Some("30s".into()),
        threshold_min: Some(99.0),
        ..Default::default()
    }]);
    let server = MetricsServer::prometheus(&prom.url);
    let q = MetricQuery::for_check(&spec, &spec.analysis.metrics[0], &server, None).unwrap();
    assert_eq!(
        q.origin,
        QueryOrigin::Builtin(BuiltinMetric::RequestSuccessRate)
    );
    let replies = run(&actor(MetricsConfig::default()), vec![q]).await;
    assert_eq!(replies[0].result, Ok(99.5));
    let outcome = MetricOutcome::from(replies[0].clone());
    assert_eq!(outcome.name, "request-success-rate");
    assert_eq!(outcome.value, MetricValue::Value(99.5));

    let got = prom.requests();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].method, "GET");
    assert_eq!(got[0].path, "/api/v1/query");
    assert_eq!(
        got[0].param("query").unwrap(),
        r#" sum( rate( istio_requests_total{ reporter="destination", destination_workload_namespace="test", destination_workload=~"podinfo", response_code!~"5.*" }[30s] ) ) / sum( rate( istio_requests_total{ reporter="destination", destination_workload_namespace="test", destination_workload=~"podinfo" }[30s] ) ) * 100"#
    );
}

#[actix::test]
async fn bearer_token_basic_auth_and_headers_are_sent() {
    let prom = Sink::always(Reply::ok(vector("1")));
    let bearer = MetricsServer::Prometheus(PrometheusServer {
        address: prom.url.clone(),
        auth: PrometheusAuth::Bearer(SecretString::new("tok-abc-123")),
        headers: vec![("X-Scope-OrgID".into(), SecretString::new("tenant-7"))],
        insecure_skip_verify: false,
    });
    let basic = MetricsServer::Prometheus(PrometheusServer {
        address: prom.url.clone(),
        auth: PrometheusAuth::Basic {
            username: SecretString::new("admin"),
            password: SecretString::new("s3cret"),
        },
        headers: vec![],
        insecure_skip_verify: true,
    });
    let a = actor(MetricsConfig::default());
    let replies = run(
        &a,
        vec![query("a", &bearer, "up"), query("b", &basic, "up")],
    )
    .await;
    assert!(replies.iter().all(|r| r.result == Ok(1.0)), "{replies:?}");
    let got = prom.requests();
    assert_eq!(got.len(), 2);
    let with_bearer = got
        .iter()
        .find(|r| r.header("authorization") == Some("Bearer tok-abc-123"))
        .expect("bearer request");
    assert_eq!(with_bearer.header("x-scope-orgid"), Some("tenant-7"));
    // base64("admin:s3cret")
    assert!(
        got.iter()
            .any(|r| r.header("authorization") == Some("Basic YWRtaW46czNjcmV0"))
    );
}

#[actix::test]
async fn no_data_and_provider_errors_are_distinct() {
    let prom = Sink::start(|r, _| match r.param("query").unwrap().as_str() {
        "empty" => Reply::ok(EMPTY),
        "nan" => Reply::ok(vector("NaN")),
        "fail" => Reply::status(500, "internal boom"),
        "garbage" => Reply::ok("<html>not json</html>"),
        "bad" => Reply::status(
            400,
            r#"{"status":"error","errorType":"bad_data","error":"parse error"}"#,
        ),
        "slow" => Reply::ok(vector("1")).after(Duration::from_secs(3)),
        _ => Reply::ok(vector("42")),
    });
    let server = MetricsServer::prometheus(&prom.url);
    let down_url = closed_port_url();
    let down = MetricsServer::prometheus(&down_url);
    let a = actor(MetricsConfig {
        query_timeout: Duration::from_millis(400),
        ..Default::default()
    });
    let names = ["empty", "nan", "fail", "garbage", "bad", "slow", "ok"];
    let mut queries: Vec<_> = names.iter().map(|n| query(n, &server, n)).collect();
    queries.push(query("down", &down, "up"));
    let r = run(&a, queries).await;
    assert_eq!(r[0].result, Err(MetricsError::NoValues));
    assert_eq!(r[1].result, Err(MetricsError::NoValues));
    assert_eq!(
        r[2].result.as_ref().unwrap_err().to_string(),
        "error response: Status 500 Internal Server Error: internal boom"
    );
    assert!(matches!(r[3].result, Err(MetricsError::InvalidResponse(_))));
    assert_eq!(
        r[4].result.as_ref().unwrap_err().to_string(),
        r#"error response: Status 400 Bad Request: {"status":"error","errorType":"bad_data","error":"parse error"}"#
    );
    assert_eq!(
        r[5].result.as_ref().unwrap_err().to_string(),
        "request failed: timeout after 400ms"
    );
    assert_eq!(r[6].result, Ok(42.0));
    let unreachable = r[7].result.as_ref().unwrap_err();
    assert!(matches!(unreachable, MetricsError::Unreachable(_)));
    // Names the endpoint that failed (upstream: `Get "<url>": dial tcp ...`).
    assert!(
        unreachable
            .to_string()
            .starts_with(&format!("request failed: GET {down_url}/api/v1/query: ")),
        "{unreachable}"
    );
    for reply in &r[2..6] {
        assert!(!reply.result.as_ref().unwrap_err().is_no_data());
    }

    // What decide() gets: builtin failures read as upstream's events.
    let builtin = |result| MetricReply {
        metric: "request-success-rate".into(),
        origin: QueryOrigin::Builtin(BuiltinMetric::RequestSuccessRate),
        result,
    };
    assert_eq!(
        MetricOutcome::from(builtin(Err(MetricsError::NoValues))).value,
        MetricValue::NoData(Some("running query failed: no values found".into()))
    );
    assert_eq!(
        MetricOutcome::from(builtin(r[7].result.clone())).value,
        MetricValue::Failed(format!("running query failed: {unreachable}"))
    );
}

#[actix::test]
async fn credentials_never_appear_in_errors_or_debug() {
    // A misbehaving proxy that echoes the request's credentials back in an error body.
    let prom = Sink::start(|r, _| {
        Reply::status(
            502,
            format!(
                "upstream rejected auth={} key={}",
                r.header("authorization").unwrap_or_default(),
                r.header("x-api-key").unwrap_or_default()
            ),
        )
    });
    let secret_server = MetricsServer::Prometheus(PrometheusServer {
        address: prom.url.replace("http://", "http://bob:pa55word@"),
        auth: PrometheusAuth::Bearer(SecretString::new("tok-very-secret")),
        headers: vec![("X-Api-Key".into(), SecretString::new("key-very-secret"))],
        insecure_skip_verify: false,
    });
    let unreachable = MetricsServer::Prometheus(PrometheusServer {
        address: closed_port_url().replace("http://", "http://bob:pa55word@"),
        auth: PrometheusAuth::Basic {
            username: SecretString::new("bob"),
            password: SecretString::new("pa55word"),
        },
        headers: vec![],
        insecure_skip_verify: false,
    });
    let a = actor(MetricsConfig::default());
    let replies = run(
        &a,
        vec![
            query("echo", &secret_server, "up"),
            query("down", &unreachable, "up"),
        ],
    )
    .await;
    let check = a
        .send(CheckProviders {
            canary: key(),
            servers: vec![unreachable.clone()],
        })
        .await
        .unwrap();
    let mut texts = vec![format!("{secret_server:?}"), format!("{unreachable:?}")];
    for r in &replies {
        let e = r.result.as_ref().unwrap_err();
        texts.push(e.to_string());
        texts.push(format!("{e:?}"));
        texts.push(format!("{:?}", MetricOutcome::from(r.clone())));
    }
    texts.push(format!("{check:?}"));
    assert!(texts[2].contains("auth=Basic <redacted>"), "{}", texts[2]);
    for t in &texts {
        // ...and "Ym9iOnBhNTV3b3Jk" is base64("bob:pa55word").
        for secret in [
            "tok-very-secret",
            "key-very-secret",
            "pa55word",
            "Ym9iOnBhNTV3b3Jk",
        ] {
            assert!(!t.contains(secret), "{secret} leaked in {t}");
        }
    }
}

#[actix::test]
async fn identical_queries_within_a_second_share_one_request() {
    let prom = Sink::always(Reply::ok(vector("7")).after(Duration::from_millis(200)));
    let server = MetricsServer::prometheus(&prom.url);
    let a = actor(MetricsConfig::default());
    // Two canaries asking the same thing at once, and a duplicate inside one message.
    let (r1, r2) = futures::join!(
        run(
            &a,
            vec![
                query("x", &server, "sum(up)"),
                query("y", &server, "sum(up)")
            ]
        ),
        run(&a, vec![query("x", &server, "sum(up)")]),
    );
    assert!(r1.iter().chain(&r2).all(|r| r.result == Ok(7.0)));
    assert_eq!(prom.count(), 1, "identical queries must share one request");
    // Whitespace-only differences are the same query once collapsed, but a different server
    // (credentials) is not.
    let other = MetricsServer::Prometheus(PrometheusServer {
        auth: PrometheusAuth::Bearer(SecretString::new("t0ken")),
        ..PrometheusServer::new(&prom.url)
    });
    run(&a, vec![query("z", &other, "sum(up)")]).await;
    assert_eq!(prom.count(), 2);
    // After the share window a new tick asks again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    run(&a, vec![query("x", &server, "sum(up)")]).await;
    assert_eq!(prom.count(), 3);
}

#[actix::test]
async fn in_flight_queries_are_bounded() {
    let prom = Sink::always(Reply::ok(vector("1")).after(Duration::from_millis(150)));
    let server = MetricsServer::prometheus(&prom.url);
    let a = actor(MetricsConfig {
        max_in_flight: 2,
        ..Default::default()
    });
    let queries = (0..8)
        .map(|i| query(&format!("m{i}"), &server, &format!("q{i}")))
        .collect();
    let replies = run(&a, queries).await;
    assert!(replies.iter().all(|r| r.result == Ok(1.0)));
    assert_eq!(prom.count(), 8);
    assert_eq!(prom.max_in_flight(), 2);
}

#[actix::test]
async fn availability_check_uses_vector_one() {
    let prom = Sink::start(|r, _| {
        if r.param("query").as_deref() == Some("vector(1)") {
            Reply::ok(vector("1"))
        } else {
            Reply::status(404, "no")
        }
    });
    let a = actor(MetricsConfig::default());
    let ok = a
        .send(CheckProviders {
            canary: key(),
            servers: vec![MetricsServer::prometheus(&prom.url)],
        })
        .await
        .unwrap();
    assert_eq!(ok, ProviderCheck::Available);
    let down = a
        .send(CheckProviders {
            canary: key(),
            servers: vec![
                MetricsServer::prometheus(&prom.url),
                MetricsServer::prometheus(closed_port_url()),
            ],
        })
        .await
        .unwrap();
    let ProviderCheck::Unavailable(why) = down else {
        panic!("expected unavailable, got {down:?}");
    };
    assert!(
        why.starts_with("prometheus not avaiable: running query failed: request failed: "),
        "{why}"
    );
    let wrong = Sink::always(Reply::ok(vector("0")));
    let check = a
        .send(CheckProviders {
            canary: key(),
            servers: vec![MetricsServer::prometheus(&wrong.url)],
        })
        .await
        .unwrap();
    assert_eq!(
        check,
        ProviderCheck::Unavailable(
            "prometheus not avaiable: value is not 1 for query: vector(1)".into()
        )
    );
}

#[actix::test]
async fn template_metrics_render_variables_and_use_the_template_provider() {
    let prom = Sink::always(Reply::ok(vector("0.5")));
    let spec = spec(vec![
        MetricInput {
            name: Some("error-budget".into()),
            template_ref: Some(TemplateRefInput {
                name: Some("budget".into()),
                namespace: None,
            }),
            template_variables: BTreeMap::from([("route".to_owned(), "/api".to_owned())]),
            interval: Some("2m".into()),
            threshold_max: Some(1.0),
            ..Default::default()
        },
        MetricInput {
            name: Some("no-vars".into()),
            template_ref: Some(TemplateRefInput {
                name: Some("budget".into()),
                namespace: None,
            }),
            ..Default::default()
        },
    ]);
    let provider = MetricProvider {
        type_: Some("prometheus".into()),
        address: Some(prom.url.clone()),
        secret_ref: Some(SecretRef {
            name: Some("prom-auth".into()),
        }),
        headers: None,
        region: None,
        insecure_skip_verify: None,
    };
    let secret = BTreeMap::from([("token".to_owned(), SecretString::new("tmpl-token"))]);
    let template = ResolvedTemplate {
        server: MetricsServer::from_template_provider(&provider, Some(&secret)).unwrap(),
        query: "sum(rate(errors{ns=\"{{ namespace }}\",app=\"{{ target }}\",route=\"{{ variables.route }}\"}[{{ interval }}]))".into(),
    };
    let global = MetricsServer::prometheus(closed_port_url());
    let q =
        MetricQuery::for_check(&spec, &spec.analysis.metrics[0], &global, Some(&template)).unwrap();
    assert_eq!(
        q.query,
        r#"sum(rate(errors{ns="test",app="podinfo",route="/api"}[2m]))"#
    );
    let replies = run(&actor(MetricsConfig::default()), vec![q]).await;
    assert_eq!(replies[0].result, Ok(0.5));
    assert_eq!(
        prom.requests()[0].header("authorization"),
        Some("Bearer tmpl-token")
    );

    let err = MetricQuery::for_check(&spec, &spec.analysis.metrics[1], &global, Some(&template))
        .unwrap_err();
    assert!(matches!(err, MetricsError::Render(_)));
    assert!(err.to_string().contains("\"route\""), "{err}");
    let missing = MetricQuery::for_check(&spec, &spec.analysis.metrics[0], &global, None)
        .unwrap_err()
        .to_string();
    assert_eq!(missing, "metric template budget.test not found");
}

#[test]
fn template_providers_are_validated() {
    let base = MetricProvider {
        type_: Some("prometheus".into()),
        address: Some("http://prom:9090".into()),
        secret_ref: Some(SecretRef {
            name: Some("s".into()),
        }),
        headers: Some(BTreeMap::from([(
            "X-Key".to_owned(),
            vec!["a".to_owned(), "b".to_owned()],
        )])),
        region: None,
        insecure_skip_verify: Some(true),
    };
    let basic = BTreeMap::from([
        ("username".to_owned(), SecretString::new("u")),
        ("password".to_owned(), SecretString::new("p")),
    ]);
    let MetricsServer::Prometheus(p) =
        MetricsServer::from_template_provider(&base, Some(&basic)).unwrap();
    assert!(matches!(p.auth, PrometheusAuth::Basic { .. }));
    assert_eq!(p.headers.len(), 2);
    assert!(p.insecure_skip_verify);

    let no_keys = BTreeMap::from([("other".to_owned(), SecretString::new("x"))]);
    let err = MetricsServer::from_template_provider(&base, Some(&no_keys)).unwrap_err();
    assert!(
        err.to_string().contains("neither a token nor a username"),
        "{err}"
    );
    let datadog = MetricProvider {
        type_: Some("datadog".into()),
        ..base.clone()
    };
    let err = MetricsServer::from_template_provider(&datadog, None).unwrap_err();
    assert!(err.to_string().contains("datadog"), "{err}");
    let typo = MetricProvider {
        type_: Some("prometeus".into()),
        ..base
    };
    let err = MetricsServer::from_template_provider(&typo, None).unwrap_err();
    assert!(err.to_string().contains("valid types"), "{err}");
}

#[actix::test]
async fn long_queries_are_sent_as_post_forms() {
    let prom = Sink::always(Reply::ok(vector("3")));
    let server = MetricsServer::prometheus(&prom.url);
    let long = format!("sum(up{{job=~\"{}\"}})", "a|".repeat(1500));
    let replies = run(
        &actor(MetricsConfig::default()),
        vec![query("long", &server, &long)],
    )
    .await;
    assert_eq!(replies[0].result, Ok(3.0));
    let got = &prom.requests()[0];
    assert_eq!(got.method, "POST");
    assert_eq!(got.param("query").unwrap(), long);
}

#[test]
fn canary_metrics_server_overrides_the_global_one() {
    let mut s = spec(vec![]);
    assert_eq!(
        MetricsServer::for_canary(&s, "http://global:9090"),
        MetricsServer::prometheus("http://global:9090")
    );
    s.metrics_server = Some("http://own:9090".into());
    assert_eq!(
        MetricsServer::for_canary(&s, "http://global:9090"),
        MetricsServer::prometheus("http://own:9090")
    );
}
