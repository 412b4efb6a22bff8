//! WebhookActor against loopback HTTP sinks.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod sink;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use actix::{Actor, Addr};
use flagger_actors::key::CanaryKey;
use flagger_actors::secret::SecretString;
use flagger_actors::webhook::{
    CallHook, ForwardEvent, HookPayload, HookResponse, WebhookActor, WebhookConfig, WebhookError,
    hook_outcome,
};
use flagger_rollout::{EventType, HookResult, HookType, Phase, Webhook};
use serde_json::json;
use sink::{Reply, Sink, closed_port_url};

fn key() -> CanaryKey {
    CanaryKey::new("test", "podinfo")
}

fn hook(name: &str, url: String) -> Webhook {
    Webhook {
        name: name.to_owned(),
        hook_type: HookType::Rollout,
        url,
        timeout: Duration::from_secs(10),
        retries: 0,
        mute_alert: false,
        disable_tls: false,
        metadata: BTreeMap::new(),
    }
}

fn fast() -> WebhookConfig {
    WebhookConfig {
        backoff_min: Duration::from_millis(50),
        backoff_max: Duration::from_millis(200),
        ..Default::default()
    }
}

async fn call(addr: &Addr<WebhookActor>, hook: Webhook) -> Result<HookResponse, WebhookError> {
    let payload = HookPayload::new(&key(), Phase::Progressing, "abc123", &hook);
    addr.send(CallHook {
        canary: key(),
        hook,
        payload,
    })
    .await
    .unwrap()
}

#[actix::test]
async fn posts_the_upstream_payload() {
    let sink = Sink::always(Reply::ok("ok"));
    let a = WebhookActor::new(fast()).start();
    let mut h = hook("load-test", format!("{}/", sink.url));
    h.metadata = BTreeMap::from([(
        "cmd".to_owned(),
        "hey -z 1m -q 10 -c 2 http://podinfo-canary.test:9898/".to_owned(),
    )]);
    assert_eq!(call(&a, h).await, Ok(HookResponse::Passed { status: 200 }));
    let mut bare = hook("gate", format!("{}/gate/check", sink.url));
    bare.hook_type = HookType::ConfirmRollout;
    call(&a, bare).await.unwrap();

    let got = sink.requests();
    assert_eq!(got[0].method, "POST");
    assert_eq!(got[0].path, "/");
    assert!(
        got[0]
            .header("content-type")
            .unwrap()
            .starts_with("application/json")
    );
    assert_eq!(
        got[0].json(),
        json!({"name": "podinfo", "namespace": "test", "phase": "Progressing",
               "checksum": "abc123", "type": "rollout",
               "metadata": {"cmd": "hey -z 1m -q 10 -c 2 http://podinfo-canary.test:9898/"}})
    );
    // metadata is omitted when empty.
    assert_eq!(
        got[1].json(),
        json!({"name": "podinfo", "namespace": "test", "phase": "Progressing",
               "checksum": "abc123", "type": "confirm-rollout"})
    );
}

#[actix::test]
async fn success_is_2xx_and_a_refusal_carries_the_body() {
    let sink = Sink::start(|r, _| match r.path.as_str() {
        "/created" => Reply::status(201, ""),
        "/nocontent" => Reply::status(204, ""),
        "/halt" => Reply::status(403, "Forbidden"),
        "/empty" => Reply::status(404, ""),
        _ => Reply::status(200, ""),
    });
    let a = WebhookActor::new(fast()).start();
    for path in ["/created", "/nocontent", "/ok"] {
        let r = call(&a, hook("h", format!("{}{path}", sink.url))).await;
        assert!(r.as_ref().unwrap().passed(), "{path}: {r:?}");
        assert_eq!(hook_outcome("h", &r).result, HookResult::Passed);
    }
    let halt = call(&a, hook("gate", format!("{}/halt", sink.url))).await;
    assert_eq!(
        halt,
        Ok(HookResponse::Rejected {
            status: 403,
            body: "Forbidden".into()
        })
    );
    assert_eq!(
        hook_outcome("gate", &halt).result,
        HookResult::Failed("Forbidden".into())
    );
    let empty = call(&a, hook("h", format!("{}/empty", sink.url))).await;
    assert_eq!(
        hook_outcome("h", &empty).result,
        HookResult::Failed("status 404".into())
    );
    // 403 and 404 are final: not retried.
    assert_eq!(sink.count(), 5);
}

#[actix::test]
async fn server_errors_are_retried_then_given_up() {
    // 500, 503 (with Retry-After 0), then 200.
    let sink = Sink::start(|_, i| match i % 3 {
        0 => Reply::status(500, "boom"),
        1 => Reply::status(503, "busy").header("retry-after", "0"),
        _ => Reply::ok("ok"),
    });
    let a = WebhookActor::new(fast()).start();
    let mut h = hook("rollout-check", format!("{}/check", sink.url));
    h.retries = 2;
    assert_eq!(
        call(&a, h.clone()).await,
        Ok(HookResponse::Passed { status: 200 })
    );
    assert_eq!(sink.count(), 3);

    h.retries = 1;
    let err = call(&a, h).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "POST {}/check giving up after 2 attempt(s): status 503: busy",
            sink.url
        )
    );
    assert_eq!(sink.count(), 5);
    let got = sink.requests();
    assert!(
        got[4].at - got[3].at >= Duration::from_millis(50),
        "backoff between retries"
    );

    // 501 Not Implemented is final, like go-retryablehttp.
    let not_impl = Sink::always(Reply::status(501, "nope"));
    let mut h = hook("h", not_impl.url.clone());
    h.retries = 3;
    assert!(matches!(
        call(&a, h).await,
        Ok(HookResponse::Rejected { status: 501, .. })
    ));
    assert_eq!(not_impl.count(), 1);
}

#[actix::test]
async fn each_attempt_has_the_hook_timeout() {
    let sink = Sink::always(Reply::ok("late").after(Duration::from_secs(3)));
    let a = WebhookActor::new(fast()).start();
    let mut h = hook("slow", format!("{}/slow", sink.url));
    h.timeout = Duration::from_millis(300);
    h.retries = 1;
    let started = Instant::now();
    let err = call(&a, h).await.unwrap_err();
    let took = started.elapsed();
    assert_eq!(
        err.to_string(),
        format!(
            "POST {}/slow giving up after 2 attempt(s): timeout after 300ms",
            sink.url
        )
    );
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert_eq!(sink.count(), 2);
}

#[actix::test]
async fn unreachable_hooks_fail_with_a_clear_text() {
    let a = WebhookActor::new(fast()).start();
    let url = closed_port_url();
    let err = call(&a, hook("down", format!("{url}/x")))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("POST {url}/x giving up after 1 attempt(s): ")),
        "{text}"
    );
    let bad = call(&a, hook("bad", "not a url".into())).await.unwrap_err();
    assert_eq!(bad.to_string(), "invalid webhook URL <invalid URL>");
}

#[actix::test]
async fn urls_are_shown_without_credentials() {
    let sink = Sink::always(Reply::status(500, "boom"));
    let a = WebhookActor::new(fast()).start();
    let url = sink
        .url
        .replace("http://", "http://admin:hunter22@")
        .to_string()
        + "/hook?token=tok-secret-1";
    let err = call(&a, hook("h", url)).await.unwrap_err();
    let texts = [err.to_string(), format!("{err:?}")];
    for t in &texts {
        assert!(!t.contains("hunter22"), "{t}");
        assert!(!t.contains("tok-secret-1"), "{t}");
    }
    assert_eq!(
        texts[0],
        format!(
            "POST {}/hook giving up after 1 attempt(s): status 500: boom",
            sink.url
        )
    );
    // The credentials were still sent.
    assert_eq!(
        sink.requests()[0].header("authorization"),
        Some("Basic YWRtaW46aHVudGVyMjI=")
    );
}

#[actix::test]
async fn requests_per_host_are_bounded() {
    let sink = Sink::always(Reply::ok("ok").after(Duration::from_millis(150)));
    let a = WebhookActor::new(WebhookConfig {
        per_host: 2,
        ..fast()
    })
    .start();
    let calls: Vec<_> = (0..6)
        .map(|i| call(&a, hook(&format!("h{i}"), format!("{}/{i}", sink.url))))
        .collect();
    let results = futures::future::join_all(calls).await;
    assert!(results.iter().all(|r| r.as_ref().unwrap().passed()));
    assert_eq!(sink.count(), 6);
    assert_eq!(sink.max_in_flight(), 2);
}

#[actix::test]
async fn events_go_to_the_canary_event_hooks_or_the_global_webhook() {
    let global = Sink::always(Reply::ok(""));
    let own = Sink::always(Reply::ok(""));
    let a = WebhookActor::new(WebhookConfig {
        event_webhook: Some(SecretString::new(format!("{}/events", global.url))),
        ..fast()
    })
    .start();
    let event = |hooks: Vec<Webhook>| ForwardEvent {
        canary: key(),
        hooks,
        phase: Phase::Progressing,
        checksum: "rev1".into(),
        event_type: EventType::Warning,
        message: "Halt podinfo.test advancement success rate 69.17% < 99%".into(),
        timestamp_ms: 1_700_000_000_123,
    };
    a.send(event(vec![])).await.unwrap();
    let got = global.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(got[0].path, "/events");
    assert_eq!(
        got[0].json(),
        json!({"name": "podinfo", "namespace": "test", "phase": "Progressing",
               "checksum": "rev1", "type": "event",
               "metadata": {"eventMessage": "Halt podinfo.test advancement success rate 69.17% < 99%",
                            "eventType": "Warning", "timestamp": "1700000000123"}})
    );

    let mut h = hook("audit", format!("{}/audit", own.url));
    h.hook_type = HookType::Event;
    h.metadata = BTreeMap::from([
        ("team".to_owned(), "web".to_owned()),
        ("eventType".to_owned(), "cannot-override".to_owned()),
    ]);
    a.send(event(vec![h])).await.unwrap();
    let got = own.wait_for(1, Duration::from_secs(5)).await;
    let body = got[0].json();
    assert_eq!(body["metadata"]["team"], "web");
    assert_eq!(body["metadata"]["eventType"], "Warning");
    // The canary's own hooks replace the global one.
    assert_eq!(global.count(), 1);
}

#[actix::test]
async fn the_global_event_webhook_is_not_retried() {
    // Failures are only logged (with the URL hidden); the call completes after one attempt.
    let sink = Sink::always(Reply::status(500, "no"));
    let a = WebhookActor::new(WebhookConfig {
        event_webhook: Some(SecretString::new(format!("{}/secret-path-xyz", sink.url))),
        ..fast()
    })
    .start();
    a.send(ForwardEvent {
        canary: key(),
        hooks: vec![],
        phase: Phase::Failed,
        checksum: String::new(),
        event_type: EventType::Normal,
        message: "m".into(),
        timestamp_ms: 0,
    })
    .await
    .unwrap();
    sink.wait_for(1, Duration::from_secs(5)).await;
    // A retry would come after `backoff_min`; give it the time to show up.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sink.count(), 1, "no retries for the global event webhook");
}

#[actix::test]
async fn a_canarys_events_arrive_in_order_and_a_slow_webhook_never_blocks_the_sender() {
    // Every other request is slow: concurrent delivery would let later events overtake.
    let sink = Sink::start(|_, i| {
        Reply::ok("").after(Duration::from_millis(if i % 2 == 0 { 150 } else { 0 }))
    });
    let a = WebhookActor::new(WebhookConfig {
        event_webhook: Some(SecretString::new(format!("{}/events", sink.url))),
        ..fast()
    })
    .start();
    let started = std::time::Instant::now();
    for (i, canary) in (0..20).flat_map(|i| [(i, key()), (i, CanaryKey::new("test", "backend"))]) {
        a.send(ForwardEvent {
            canary,
            hooks: vec![],
            phase: Phase::Progressing,
            checksum: "rev1".into(),
            event_type: EventType::Normal,
            message: format!("event {i}"),
            timestamp_ms: i,
        })
        .await
        .unwrap();
    }
    // Delivering before answering would take 20 × 150 ms.
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "sending queued the events: {:?}",
        started.elapsed()
    );
    let got = sink.wait_for(40, Duration::from_secs(20)).await;
    for name in ["podinfo", "backend"] {
        let order: Vec<String> = got
            .iter()
            .map(|r| r.json())
            .filter(|b| b["name"] == name)
            .map(|b| b["metadata"]["eventMessage"].as_str().unwrap().to_owned())
            .collect();
        let expected: Vec<String> = (0..20).map(|i| format!("event {i}")).collect();
        assert_eq!(order, expected, "{name}");
    }
    // One delivery at a time per canary.
    assert!(sink.max_in_flight() <= 2, "{}", sink.max_in_flight());
}

#[actix::test]
async fn a_full_event_queue_drops_the_oldest_waiting_event() {
    let sink = Sink::always(Reply::ok("").after(Duration::from_millis(300)));
    let a = WebhookActor::new(WebhookConfig {
        event_webhook: Some(SecretString::new(format!("{}/events", sink.url))),
        event_queue_capacity: 2,
        ..fast()
    })
    .start();
    for i in 0..5 {
        if i == 1 {
            // "event 0" is in flight before the others queue up.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        a.send(ForwardEvent {
            canary: key(),
            hooks: vec![],
            phase: Phase::Progressing,
            checksum: "rev1".into(),
            event_type: EventType::Normal,
            message: format!("event {i}"),
            timestamp_ms: i,
        })
        .await
        .unwrap();
    }
    let got = sink.wait_for(3, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let messages: Vec<String> = sink
        .requests()
        .iter()
        .map(|r| {
            r.json()["metadata"]["eventMessage"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    // "event 0" was in flight; of 1..4 only the newest two waited.
    assert_eq!(messages, ["event 0", "event 3", "event 4"], "{got:?}");
}
