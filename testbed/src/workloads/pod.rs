//! The simulated kubelet: what a Pod's status is at a given time.
//!
//! A Pod is `Pending` (containers being created, not Ready) from its start until `ready_delay`
//! has passed, then `Running` with a loopback `podIP` and `Ready=True`. A Pod whose annotations
//! carry `testbed.flagger.app/never-ready: "true"` runs but never becomes Ready (a failing
//! readiness probe), which is how tests model a broken release. The value may instead be a list
//! of `key=value` labels (`app=podinfo-primary`): then only Pods carrying all of them stay
//! unready, so one template can be healthy as a canary and broken once promoted to the primary.

use std::time::Duration;

use jiff::Timestamp;
use serde_json::{Value, json};

use super::meta::{add_duration, at, find_condition, str_at, time_str};

/// Pod template annotation that keeps the Pods of a workload from ever becoming Ready.
pub const NEVER_READY_ANNOTATION: &str = "testbed.flagger.app/never-ready";

/// The node every simulated Pod runs on (it is also the Pods' `hostIP`).
pub const NODE_NAME: &str = "testbed";
const HOST_IP: &str = "127.0.0.1";

pub fn never_ready(pod: &Value) -> bool {
    let Some(value) = str_at(pod, &["metadata", "annotations", NEVER_READY_ANNOTATION]) else {
        return false;
    };
    if value.eq_ignore_ascii_case("true") {
        return true;
    }
    let mut labels = value.split(',').map(str::trim).filter(|l| !l.is_empty());
    let mut any = false;
    let all = labels.all(|l| {
        any = true;
        l.split_once('=')
            .is_some_and(|(k, v)| str_at(pod, &["metadata", "labels", k.trim()]) == Some(v.trim()))
    });
    any && all
}

/// `status.conditions[Ready] == True`.
pub fn is_ready(pod: &Value) -> bool {
    at(pod, &["status", "conditions"])
        .and_then(Value::as_array)
        .and_then(|c| find_condition(c, "Ready"))
        .and_then(|c| c.get("status"))
        .and_then(Value::as_str)
        == Some("True")
}

/// When the Pod became Ready (its Ready condition's `lastTransitionTime`), if it is Ready.
pub fn ready_since(pod: &Value) -> Option<Timestamp> {
    if !is_ready(pod) {
        return None;
    }
    let conds = at(pod, &["status", "conditions"])?.as_array()?;
    find_condition(conds, "Ready")?
        .get("lastTransitionTime")?
        .as_str()?
        .parse()
        .ok()
}

/// The status the kubelet reports for `pod` at `now`, given when the Pod started (`born`), and
/// when to look again (`Some` while the Pod is still starting). `ip` is called only when the Pod
/// needs an address and has none yet, so addresses stay stable across calls.
pub fn desired_status(
    pod: &Value,
    born: Timestamp,
    now: Timestamp,
    ready_delay: Duration,
    ip: impl FnOnce() -> String,
) -> (Value, Option<Timestamp>) {
    let started_at = add_duration(born, ready_delay);
    let containers: Vec<(&str, &str)> = at(pod, &["spec", "containers"])
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    (
                        c.get("name").and_then(Value::as_str).unwrap_or_default(),
                        c.get("image").and_then(Value::as_str).unwrap_or_default(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let unready_message = format!(
        "containers with unready status: [{}]",
        containers
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let born_s = time_str(born);
    let running = now >= started_at;
    let ready = running && !never_ready(pod);
    let started_s = time_str(started_at);

    let ready_cond = |kind: &str| {
        if ready {
            json!({"type": kind, "status": "True", "lastProbeTime": null, "lastTransitionTime": started_s})
        } else {
            json!({"type": kind, "status": "False", "lastProbeTime": null, "lastTransitionTime": born_s,
                   "reason": "ContainersNotReady", "message": unready_message})
        }
    };
    let container_statuses: Vec<Value> = containers
        .iter()
        .map(|(name, image)| {
            let state = if running {
                json!({"running": {"startedAt": started_s}})
            } else {
                json!({"waiting": {"reason": "ContainerCreating"}})
            };
            json!({"name": name, "image": image, "imageID": "", "ready": ready,
                   "started": running, "restartCount": 0, "state": state})
        })
        .collect();
    let sandbox_since = if running { &started_s } else { &born_s };
    let mut status = json!({
        "phase": if running { "Running" } else { "Pending" },
        "hostIP": HOST_IP,
        "hostIPs": [{"ip": HOST_IP}],
        "startTime": born_s,
        "qosClass": "BestEffort",
        "conditions": [
            {"type": "PodReadyToStartContainers", "status": if running { "True" } else { "False" },
             "lastProbeTime": null, "lastTransitionTime": sandbox_since},
            {"type": "Initialized", "status": "True", "lastProbeTime": null, "lastTransitionTime": born_s},
            ready_cond("Ready"),
            ready_cond("ContainersReady"),
            {"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": born_s},
        ],
        "containerStatuses": container_statuses,
    });
    if running {
        let ip = str_at(pod, &["status", "podIP"])
            .map(str::to_owned)
            .unwrap_or_else(ip);
        status["podIP"] = json!(ip);
        status["podIPs"] = json!([{ "ip": ip }]);
    }
    (status, (!running).then_some(started_at))
}

/// The `n`-th loopback address handed to a Pod: 127.0.0.2, 127.0.0.3, … then 127.0.1.1, …
/// (the whole 127/8 block is loopback, so every Pod gets a distinct, local address).
pub fn loopback_ip(n: u32) -> String {
    // Skip .0 and .255 in the last octet and start at 127.0.0.2 (127.0.0.1 is the node).
    let n = u64::from(n) + 1;
    let last = n % 254 + 1;
    let rest = n / 254;
    format!("127.{}.{}.{}", (rest >> 8) & 0xff, rest & 0xff, last)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn pod(annotations: Value) -> Value {
        json!({"metadata": {"name": "p", "annotations": annotations},
               "spec": {"containers": [{"name": "app", "image": "podinfo:6.0.0"}, {"name": "side", "image": "envoy"}]}})
    }

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn pending_until_the_ready_delay_then_running_and_ready() {
        let born = t("2024-05-01T10:00:00Z");
        let p = pod(json!({}));
        let (status, wake) = desired_status(
            &p,
            born,
            t("2024-05-01T10:00:00.5Z"),
            Duration::from_secs(1),
            || "127.0.0.9".into(),
        );
        assert_eq!(status["phase"], "Pending");
        assert!(status.get("podIP").is_none());
        assert_eq!(wake, Some(t("2024-05-01T10:00:01Z")));
        let with_status = {
            let mut p = p.clone();
            p["status"] = status;
            p
        };
        assert!(!is_ready(&with_status));

        let (status, wake) = desired_status(
            &p,
            born,
            t("2024-05-01T10:00:01Z"),
            Duration::from_secs(1),
            || "127.0.0.9".into(),
        );
        assert_eq!(status["phase"], "Running");
        assert_eq!(status["podIP"], "127.0.0.9");
        assert_eq!(wake, None);
        assert_eq!(status["containerStatuses"][1]["ready"], true);
        let mut p = p;
        p["status"] = status;
        assert!(is_ready(&p));
        assert_eq!(ready_since(&p), Some(t("2024-05-01T10:00:01Z")));
    }

    #[test]
    fn never_ready_pods_run_but_stay_unready() {
        let born = t("2024-05-01T10:00:00Z");
        let p = pod(json!({ NEVER_READY_ANNOTATION: "true" }));
        let (status, wake) = desired_status(
            &p,
            born,
            t("2024-05-01T11:00:00Z"),
            Duration::from_secs(1),
            || "127.0.0.9".into(),
        );
        assert_eq!(status["phase"], "Running");
        assert_eq!(wake, None);
        assert_eq!(status["conditions"][2]["type"], "Ready");
        assert_eq!(status["conditions"][2]["status"], "False");
        assert_eq!(
            status["conditions"][2]["message"],
            "containers with unready status: [app side]"
        );
    }

    #[test]
    fn never_ready_can_be_limited_to_pods_with_labels() {
        let with = |value: &str, labels: Value| {
            let mut p = pod(json!({ NEVER_READY_ANNOTATION: value }));
            p["metadata"]["labels"] = labels;
            never_ready(&p)
        };
        let primary = json!({"app": "podinfo-primary", "tier": "web"});
        let canary = json!({"app": "podinfo", "tier": "web"});
        assert!(with("app=podinfo-primary", primary.clone()));
        assert!(!with("app=podinfo-primary", canary.clone()));
        assert!(with("app=podinfo-primary, tier=web", primary.clone()));
        assert!(!with("app=podinfo-primary,tier=db", primary.clone()));
        assert!(with("TRUE", canary.clone()));
        assert!(!with("false", primary.clone()));
        assert!(!with("", primary));
        assert!(!with("app", canary));
    }

    #[test]
    fn an_assigned_ip_is_kept() {
        let mut p = pod(json!({}));
        p["status"] = json!({"podIP": "127.0.0.42"});
        let (status, _) = desired_status(
            &p,
            t("2024-05-01T10:00:00Z"),
            t("2024-05-01T10:00:05Z"),
            Duration::ZERO,
            || unreachable!("an address is already assigned"),
        );
        assert_eq!(status["podIP"], "127.0.0.42");
    }

    #[test]
    fn loopback_ips_are_distinct_and_skip_network_and_broadcast() {
        assert_eq!(loopback_ip(0), "127.0.0.2");
        assert_eq!(loopback_ip(252), "127.0.0.254");
        assert_eq!(loopback_ip(253), "127.0.1.1");
        let all: std::collections::HashSet<String> = (0..100_000).map(loopback_ip).collect();
        assert_eq!(all.len(), 100_000);
        assert!(
            all.iter()
                .all(|ip| !ip.ends_with(".0") && !ip.ends_with(".255"))
        );
    }
}
