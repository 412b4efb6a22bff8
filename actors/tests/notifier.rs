//! NotifierActor against loopback chat sinks.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod sink;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use actix::{Actor, Addr};
use flagger_actors::crd::alert_provider::AlertProviderSpec;
use flagger_actors::crd::metric_template::SecretRef;
use flagger_actors::key::CanaryKey;
use flagger_actors::notifier::{
    AlertRoute, ChatKind, Destination, NotifierActor, NotifierConfig, Notify,
};
use flagger_actors::secret::SecretString;
use flagger_rollout::Severity;
use serde_json::json;
use sink::{Reply, Sink};

fn key() -> CanaryKey {
    CanaryKey::new("test", "podinfo")
}

fn dest(kind: ChatKind, url: &str) -> Destination {
    Destination {
        kind,
        address: SecretString::new(url),
        channel: "general".into(),
        username: "flagger".into(),
        proxy: None,
        token: None,
        label: format!("test {kind}"),
    }
}

fn fields() -> Vec<(String, String)> {
    vec![
        ("Target".into(), "Deployment/podinfo.test".into()),
        ("Failed checks threshold".into(), "5".into()),
    ]
}

fn notify(message: &str, severity: Severity, alerts: Option<Vec<AlertRoute>>) -> Notify {
    Notify {
        canary: key(),
        occurrence: "rev-1@1".into(),
        severity,
        message: message.into(),
        fields: fields(),
        alerts,
    }
}

fn fast(global: Option<Destination>) -> NotifierConfig {
    NotifierConfig {
        global,
        min_interval: Duration::from_millis(100),
        ..Default::default()
    }
}

fn start(config: NotifierConfig) -> Addr<NotifierActor> {
    NotifierActor::new(config).start()
}

#[actix::test]
async fn slack_payload_is_upstream_shape() {
    let slack = Sink::always(Reply::ok("ok"));
    let mut d = dest(
        ChatKind::Slack,
        &format!("{}/services/T0/B0/XYZ", slack.url),
    );
    d.channel = "on-call".into();
    let a = start(NotifierConfig {
        cluster_name: Some("prod-eu".into()),
        ..fast(Some(d))
    });
    a.send(notify(
        "New revision detected, progressing canary analysis.",
        Severity::Info,
        None,
    ))
    .await
    .unwrap();
    a.send(notify(
        "Failed checks threshold reached 5",
        Severity::Error,
        None,
    ))
    .await
    .unwrap();
    let got = slack.wait_for(2, Duration::from_secs(5)).await;
    assert_eq!(got[0].path, "/services/T0/B0/XYZ");
    assert!(
        got[0]
            .header("content-type")
            .unwrap()
            .starts_with("application/json")
    );
    assert_eq!(
        got[0].json(),
        json!({
            "channel": "on-call", "username": "flagger", "icon_url": "", "icon_emoji": ":rocket:",
            "attachments": [{
                "color": "good", "author_name": "podinfo.test",
                "text": "New revision detected, progressing canary analysis.",
                "mrkdwn_in": ["text"],
                "fields": [
                    {"title": "Cluster", "value": "prod-eu", "short": false},
                    {"title": "Target", "value": "Deployment/podinfo.test", "short": false},
                    {"title": "Failed checks threshold", "value": "5", "short": false},
                ],
            }],
        })
    );
    assert_eq!(got[1].json()["attachments"][0]["color"], "danger");
}

#[actix::test]
async fn teams_discord_rocket_gchat_and_generic_payloads() {
    let s = Sink::always(Reply::ok(""));
    let route = |kind: ChatKind, path: &str| AlertRoute {
        severity: Severity::Info,
        destination: dest(kind, &format!("{}{path}", s.url)),
    };
    let alerts = vec![
        route(ChatKind::MsTeams, "/teams"),
        route(ChatKind::Discord, "/api/webhooks/1/abc"),
        route(ChatKind::Rocket, "/rocket"),
        route(ChatKind::GChat, "/gchat"),
        route(ChatKind::Generic, "/generic"),
    ];
    let a = start(fast(None));
    a.send(notify(
        "Promotion failed, primary not ready: x",
        Severity::Error,
        Some(alerts),
    ))
    .await
    .unwrap();
    let got = s.wait_for(5, Duration::from_secs(5)).await;
    let by_path = |p: &str| got.iter().find(|r| r.path == p).unwrap().json();
    assert_eq!(
        by_path("/teams"),
        json!({
            "@type": "MessageCard", "@context": "http://schema.org/extensions",
            "themeColor": "FF0000", "summary": "podinfo.test",
            "sections": [{
                "activityTitle": "Promotion failed, primary not ready: x",
                "activitySubtitle": "podinfo.test",
                "facts": [
                    {"name": "Target", "value": "Deployment/podinfo.test"},
                    {"name": "Failed checks threshold", "value": "5"},
                ],
            }],
        })
    );
    // Discord gets the Slack payload on its /slack endpoint.
    let discord = by_path("/api/webhooks/1/abc/slack");
    assert_eq!(discord["attachments"][0]["color"], "danger");
    assert_eq!(discord["attachments"][0]["author_name"], "podinfo.test");
    assert_eq!(by_path("/rocket")["attachments"][0]["color"], "#FF0000");
    assert_eq!(
        by_path("/gchat"),
        json!({"cards": [{
            "header": {"title": "Flagger", "subtitle": "podinfo.test",
                       "imageUrl": "https://flagger.app/favicon.png"},
            "sections": [
                {"widgets": [{"textParagraph": {"text": "<font color=#848484><strong>Promotion failed, primary not ready: x</strong></font>"}}]},
                {"widgets": [{"textParagraph": {"text": "Target<br><font color=#848484><strong>Deployment/podinfo.test</strong></font>"}}]},
                {"widgets": [{"textParagraph": {"text": "Failed checks threshold<br><font color=#848484><strong>5</strong></font>"}}]},
            ],
        }]})
    );
    assert_eq!(
        by_path("/generic"),
        json!({"name": "podinfo", "namespace": "test", "severity": "error",
               "message": "Promotion failed, primary not ready: x",
               "fields": [{"name": "Target", "value": "Deployment/podinfo.test"},
                          {"name": "Failed checks threshold", "value": "5"}]})
    );
}

#[actix::test]
async fn alerts_are_filtered_by_severity_and_replace_the_global_notifier() {
    let s = Sink::always(Reply::ok(""));
    let global = Sink::always(Reply::ok(""));
    let route = |level: Severity, path: &str| AlertRoute {
        severity: level,
        destination: dest(ChatKind::Generic, &format!("{}{path}", s.url)),
    };
    let alerts = vec![
        route(Severity::Info, "/info"),
        route(Severity::Warn, "/warn"),
        route(Severity::Error, "/error"),
    ];
    let a = start(fast(Some(dest(ChatKind::Generic, &global.url))));
    for (msg, sev) in [
        ("i", Severity::Info),
        ("w", Severity::Warn),
        ("e", Severity::Error),
    ] {
        a.send(notify(msg, sev, Some(alerts.clone())))
            .await
            .unwrap();
    }
    let got = s.wait_for(6, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut seen: Vec<(String, String)> = s
        .requests()
        .iter()
        .map(|r| {
            (
                r.path.clone(),
                r.json()["message"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    seen.sort();
    let expected: Vec<(String, String)> = [
        ("/error", "e"),
        ("/info", "e"),
        ("/info", "i"),
        ("/info", "w"),
        ("/warn", "e"),
        ("/warn", "w"),
    ]
    .iter()
    .map(|(p, m)| (p.to_string(), m.to_string()))
    .collect();
    assert_eq!(seen, expected, "{got:?}");
    assert_eq!(
        global.count(),
        0,
        "a canary with alerts does not use the global notifier"
    );
}

#[actix::test]
async fn one_message_per_second_per_url_and_notify_never_blocks() {
    let slow = Sink::always(Reply::ok("").after(Duration::from_millis(200)));
    let other = Sink::always(Reply::ok(""));
    let a = start(NotifierConfig::default());
    let to = |d: Destination| {
        Some(vec![AlertRoute {
            severity: Severity::Info,
            destination: d,
        }])
    };
    let started = Instant::now();
    for i in 0..3 {
        a.send(notify(
            &format!("m{i}"),
            Severity::Info,
            to(dest(ChatKind::Slack, &slow.url)),
        ))
        .await
        .unwrap();
    }
    a.send(notify(
        "x",
        Severity::Info,
        to(dest(ChatKind::Slack, &other.url)),
    ))
    .await
    .unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(150),
        "Notify must return before delivery"
    );
    // Another URL is not held up by the first one's queue.
    other.wait_for(1, Duration::from_millis(500)).await;
    let got = slow.wait_for(3, Duration::from_secs(5)).await;
    let texts: Vec<_> = got
        .iter()
        .map(|r| {
            r.json()["attachments"][0]["text"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(texts, ["m0", "m1", "m2"], "in order");
    for pair in got.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(gap >= Duration::from_millis(990), "gap {gap:?}");
    }
}

#[actix::test]
async fn a_full_queue_drops_the_oldest_message() {
    let s = Sink::always(Reply::ok(""));
    let a = start(NotifierConfig {
        queue_capacity: 2,
        min_interval: Duration::from_millis(500),
        ..Default::default()
    });
    let to = || {
        Some(vec![AlertRoute {
            severity: Severity::Info,
            destination: dest(ChatKind::Generic, &s.url),
        }])
    };
    a.send(notify("first", Severity::Info, to())).await.unwrap();
    s.wait_for(1, Duration::from_secs(2)).await;
    // The lane now waits 500 ms; these four arrive meanwhile, only the last two fit.
    for m in ["a", "b", "c", "d"] {
        a.send(notify(m, Severity::Info, to())).await.unwrap();
    }
    s.wait_for(3, Duration::from_secs(3)).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let texts: Vec<_> = s
        .requests()
        .iter()
        .map(|r| r.json()["message"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(texts, ["first", "c", "d"]);
}

#[actix::test]
async fn the_same_message_for_the_same_revision_is_sent_once() {
    let s = Sink::always(Reply::ok(""));
    let a = start(fast(Some(dest(ChatKind::Generic, &s.url))));
    let waiting = "Canary traffic increase is waiting for approval.";
    for _ in 0..3 {
        a.send(notify(waiting, Severity::Warn, None)).await.unwrap();
    }
    let mut next = notify(waiting, Severity::Warn, None);
    next.occurrence = "rev-2@2".into();
    a.send(next).await.unwrap();
    let mut other_canary = notify(waiting, Severity::Warn, None);
    other_canary.canary = CanaryKey::new("test", "backend");
    a.send(other_canary).await.unwrap();
    s.wait_for(3, Duration::from_secs(3)).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        s.count(),
        3,
        "rev-1 once, rev-2 once, the other canary once"
    );
}

#[actix::test]
async fn delivery_failures_and_hangs_do_not_stop_the_lane() {
    let s = Sink::start(|r, _| match r.json()["message"].as_str().unwrap() {
        "hang" => Reply::ok("").after(Duration::from_secs(3)),
        "fail" => Reply::status(500, "nope"),
        _ => Reply::ok(""),
    });
    let a = start(NotifierConfig {
        timeout: Duration::from_millis(300),
        min_interval: Duration::from_millis(50),
        ..fast(Some(dest(ChatKind::Generic, &s.url)))
    });
    let started = Instant::now();
    for m in ["hang", "fail", "ok"] {
        a.send(notify(m, Severity::Info, None)).await.unwrap();
    }
    s.wait_for(3, Duration::from_secs(2)).await;
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[actix::test]
async fn slack_bot_token_is_sent_as_bearer() {
    let s = Sink::always(Reply::ok(""));
    let provider = AlertProviderSpec {
        type_: Some("slack".into()),
        channel: Some("deploys".into()),
        username: None,
        address: None,
        proxy: None,
        secret_ref: Some(SecretRef {
            name: Some("slack-bot".into()),
        }),
    };
    let secret = BTreeMap::from([
        (
            "address".to_owned(),
            SecretString::new(format!("{}/api/chat.postMessage", s.url)),
        ),
        ("token".to_owned(), SecretString::new("xoxb-secret-token")),
    ]);
    let d = Destination::from_alert_provider("on-call", "test", &provider, Some(&secret)).unwrap();
    assert_eq!(d.username, "flagger");
    assert_eq!(d.channel, "deploys");
    let a = start(fast(None));
    a.send(notify(
        "m",
        Severity::Info,
        Some(vec![AlertRoute {
            severity: Severity::Info,
            destination: d.clone(),
        }]),
    ))
    .await
    .unwrap();
    let got = s.wait_for(1, Duration::from_secs(3)).await;
    assert_eq!(
        got[0].header("authorization"),
        Some("Bearer xoxb-secret-token")
    );
    assert_eq!(got[0].json()["channel"], "deploys");
    let shown = format!("{d:?}");
    assert!(!shown.contains("xoxb-secret-token"), "{shown}");
    assert!(!shown.contains(&s.url), "{shown}");
}

#[test]
fn alert_providers_and_flags_are_validated_without_leaking_addresses() {
    let spec = |address: Option<&str>| AlertProviderSpec {
        type_: Some("msteams".into()),
        channel: None,
        username: None,
        address: address.map(str::to_owned),
        proxy: None,
        secret_ref: None,
    };
    let d = Destination::from_alert_provider(
        "t",
        "ns",
        &spec(Some("https://x.example/hook/abc")),
        None,
    )
    .unwrap();
    assert_eq!(d.kind, ChatKind::MsTeams);
    assert_eq!(d.label, "alertprovider t.ns");
    let err = Destination::from_alert_provider("t", "ns", &spec(Some("not-a-url-secret-42")), None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("invalid msteams webhook URL"), "{err}");
    assert!(!err.contains("secret-42"), "{err}");
    let no_key = AlertProviderSpec {
        secret_ref: Some(SecretRef {
            name: Some("s".into()),
        }),
        ..spec(None)
    };
    let err = Destination::from_alert_provider("t", "ns", &no_key, Some(&BTreeMap::new()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("\"address\""), "{err}");
    let unknown = AlertProviderSpec {
        type_: Some("pager".into()),
        ..spec(Some("https://x"))
    };
    let err = Destination::from_alert_provider("t", "ns", &unknown, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("valid types"), "{err}");

    let slack_url = Some(SecretString::new(
        "https://hooks.slack.com/services/T/B/secret",
    ));
    let err = Destination::global_from_flags(slack_url.clone(), None, None, None, None, None, None)
        .unwrap_err();
    assert_eq!(err.to_string(), "Notifier empty Slack channel");
    let global = Destination::global_from_flags(
        slack_url,
        None,
        Some("general".into()),
        None,
        None,
        Some(SecretString::new("https://teams")),
        None,
    )
    .unwrap()
    .unwrap();
    assert_eq!(
        (global.kind, global.username.as_str()),
        (ChatKind::Slack, "flagger")
    );
    let teams = Destination::global_from_flags(
        None,
        None,
        None,
        None,
        None,
        Some(SecretString::new("https://teams.example/hook")),
        None,
    )
    .unwrap()
    .unwrap();
    assert_eq!(teams.kind, ChatKind::MsTeams);
    assert_eq!(
        Destination::global_from_flags(None, None, None, None, None, None, None).unwrap(),
        None
    );
}
