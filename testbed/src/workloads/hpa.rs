//! The HorizontalPodAutoscaler controller's decisions, as a pure function of the HPA, its target
//! and the time. Reads `minReplicas` (default 1), `maxReplicas` and `scaleTargetRef`, which have
//! the same shape in autoscaling v2, v2beta2 and v2beta1.
//!
//! As the real controller: a target with 0 replicas is left alone while `minReplicas` is not 0
//! (`ScalingActive=False`, reason `ScalingDisabled`) — Flagger relies on this when it scales a
//! canary to zero; a target above `maxReplicas` or below `minReplicas` is scaled to the bound
//! (`AbleToScale` reason `SucceededRescale`, `lastScaleTime` set); otherwise the recommendation
//! is the current size, since the testbed simulates no load (`ScalingActive` `ValidMetricFound`,
//! `AbleToScale` `ReadyForNewScale`, `ScalingLimited` `DesiredWithinRange`).

use jiff::Timestamp;
use serde_json::{Map, Value, json};

use super::meta::{at, conditions, generation, i64_at, str_at, time_str};

/// The HPA's target, as the caller resolved `spec.scaleTargetRef`.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// A Deployment in the HPA's namespace.
    Deployment(&'a Value),
    /// The target kind is supported but no such object exists.
    Missing,
    /// A kind the testbed cannot scale (only Deployments are simulated).
    Unsupported,
}

/// Which Deployment an HPA targets, if it targets one: `(name)` in the HPA's namespace.
pub fn target_deployment(hpa: &Value) -> Option<&str> {
    let kind = str_at(hpa, &["spec", "scaleTargetRef", "kind"])?;
    let api_version = str_at(hpa, &["spec", "scaleTargetRef", "apiVersion"]).unwrap_or("apps/v1");
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    (kind == "Deployment" && matches!(group, "apps" | "extensions"))
        .then(|| str_at(hpa, &["spec", "scaleTargetRef", "name"]))
        .flatten()
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    /// New `spec.replicas` for the target Deployment (the scale subresource write).
    pub scale_target_to: Option<i64>,
    /// New HPA status, when it changes.
    pub status: Option<Value>,
}

pub fn plan(hpa: &Value, target: Target<'_>, now: Timestamp) -> Plan {
    let old_status = hpa.get("status").cloned().unwrap_or_else(|| json!({}));
    let mut conds = conditions(&old_status);
    let now_s = time_str(now);
    let mut status = Map::new();
    status.insert("observedGeneration".into(), json!(generation(hpa)));
    if let Some(t) = old_status.get("lastScaleTime") {
        status.insert("lastScaleTime".into(), t.clone());
    }

    let target_name = str_at(hpa, &["spec", "scaleTargetRef", "name"]).unwrap_or_default();
    let dep = match target {
        Target::Deployment(dep) => dep,
        Target::Missing | Target::Unsupported => {
            let reason = match target {
                Target::Missing => format!("deployments.apps \"{target_name}\" not found"),
                _ => format!(
                    "no matches for kind \"{}\" in group \"{}\"",
                    str_at(hpa, &["spec", "scaleTargetRef", "kind"]).unwrap_or_default(),
                    str_at(hpa, &["spec", "scaleTargetRef", "apiVersion"])
                        .and_then(|v| v.rsplit_once('/').map(|(g, _)| g))
                        .unwrap_or_default(),
                ),
            };
            set_condition(
                &mut conds,
                "AbleToScale",
                "False",
                "FailedGetScale",
                &format!(
                    "the HPA controller was unable to get the target's current scale: {reason}"
                ),
                &now_s,
            );
            for key in ["currentReplicas", "desiredReplicas"] {
                if let Some(v) = old_status.get(key) {
                    status.insert(key.into(), v.clone());
                }
            }
            status.entry("desiredReplicas").or_insert_with(|| json!(0));
            status.insert("conditions".into(), Value::Array(conds));
            return finish(hpa, None, Value::Object(status));
        }
    };

    let min = i64_at(hpa, &["spec", "minReplicas"]).unwrap_or(1).max(0);
    // The API requires maxReplicas >= minReplicas; be lenient rather than fight the bounds.
    let max = i64_at(hpa, &["spec", "maxReplicas"])
        .unwrap_or(i64::MAX)
        .max(min);
    let current = i64_at(dep, &["spec", "replicas"]).unwrap_or(1).max(0);

    set_condition(
        &mut conds,
        "AbleToScale",
        "True",
        "SucceededGetScale",
        "the HPA controller was able to get the target's current scale",
        &now_s,
    );
    let desired = if current == 0 && min != 0 {
        set_condition(
            &mut conds,
            "ScalingActive",
            "False",
            "ScalingDisabled",
            "scaling is disabled since the replica count of the target is zero",
            &now_s,
        );
        0
    } else if current > max {
        max
    } else if current < min {
        min
    } else {
        set_condition(
            &mut conds,
            "ScalingActive",
            "True",
            "ValidMetricFound",
            &format!(
                "the HPA was able to successfully calculate a replica count from {}",
                metric_description(hpa)
            ),
            &now_s,
        );
        set_condition(
            &mut conds,
            "AbleToScale",
            "True",
            "ReadyForNewScale",
            "recommended size matches current size",
            &now_s,
        );
        set_condition(
            &mut conds,
            "ScalingLimited",
            "False",
            "DesiredWithinRange",
            "the desired count is within the acceptable range",
            &now_s,
        );
        current
    };
    let rescale = desired != current;
    if rescale {
        set_condition(
            &mut conds,
            "AbleToScale",
            "True",
            "SucceededRescale",
            &format!("the HPA controller was able to update the target scale to {desired}"),
            &now_s,
        );
        status.insert("lastScaleTime".into(), json!(now_s));
    }
    if current > 0 {
        status.insert("currentReplicas".into(), json!(current));
    }
    status.insert("desiredReplicas".into(), json!(desired));
    status.insert("conditions".into(), Value::Array(conds));
    finish(hpa, rescale.then_some(desired), Value::Object(status))
}

fn finish(hpa: &Value, scale_target_to: Option<i64>, status: Value) -> Plan {
    Plan {
        scale_target_to,
        status: (hpa.get("status") != Some(&status)).then_some(status),
    }
}

/// How `kubectl describe hpa` names the first metric in `ValidMetricFound` messages.
fn metric_description(hpa: &Value) -> String {
    let Some(metric) = at(hpa, &["spec", "metrics"])
        .and_then(Value::as_array)
        .and_then(|m| m.first())
    else {
        // No metrics means the default: 80% average CPU utilization.
        return "cpu resource utilization (percentage of request)".into();
    };
    let kind = metric
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("Resource");
    let field = match kind {
        "ContainerResource" => "containerResource",
        "Pods" => "pods",
        "Object" => "object",
        "External" => "external",
        _ => "resource",
    };
    let body = metric.get(field).unwrap_or(&Value::Null);
    // v2 nests the metric name under `metric.name`; v2beta1 has `metricName`.
    let metric_name = str_at(body, &["metric", "name"])
        .or_else(|| str_at(body, &["metricName"]))
        .or_else(|| str_at(body, &["name"]))
        .unwrap_or_default();
    match field {
        "resource" | "containerResource" => {
            let utilization = str_at(body, &["target", "type"]) == Some("Utilization")
                || body.get("targetAverageUtilization").is_some();
            if utilization {
                format!("{metric_name} resource utilization (percentage of request)")
            } else {
                format!("{metric_name} resource")
            }
        }
        "pods" => format!("pods metric {metric_name}"),
        "object" => format!(
            "{} metric {metric_name}",
            str_at(body, &["describedObject", "kind"])
                .or_else(|| str_at(body, &["target", "kind"]))
                .unwrap_or("object")
        ),
        _ => format!("external metric {metric_name}"),
    }
}

/// The HPA controller's condition update: reason and message replaced, the transition time
/// changes only with the status.
fn set_condition(
    conds: &mut Vec<Value>,
    kind: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: &str,
) {
    let pos = conds
        .iter()
        .position(|c| c.get("type").and_then(Value::as_str) == Some(kind));
    let transition = pos
        .and_then(|i| {
            let c = &conds[i];
            (c.get("status").and_then(Value::as_str) == Some(status))
                .then(|| c.get("lastTransitionTime").cloned())
                .flatten()
        })
        .unwrap_or_else(|| json!(now));
    let cond = json!({
        "type": kind, "status": status, "lastTransitionTime": transition,
        "reason": reason, "message": message,
    });
    match pos {
        Some(i) => conds[i] = cond,
        None => conds.push(cond),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn hpa(min: Option<i64>, max: i64) -> Value {
        let mut h = json!({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "podinfo", "namespace": "test", "generation": 1},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                     "maxReplicas": max,
                     "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                                  "target": {"type": "Utilization", "averageUtilization": 99}}}]},
        });
        if let Some(min) = min {
            h["spec"]["minReplicas"] = json!(min);
        }
        h
    }

    fn dep(replicas: i64) -> Value {
        json!({"metadata": {"name": "podinfo", "namespace": "test"}, "spec": {"replicas": replicas}})
    }

    fn now() -> Timestamp {
        "2024-05-01T10:00:00Z".parse().unwrap()
    }

    fn cond<'a>(status: &'a Value, kind: &str) -> (&'a str, &'a str) {
        let c = status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == kind)
            .unwrap();
        (c["status"].as_str().unwrap(), c["reason"].as_str().unwrap())
    }

    #[test]
    fn clamps_the_target_into_min_and_max() {
        let cases = [
            // (min, max, current, expected write)
            (Some(2), 4, 1, Some(2)),
            (Some(2), 4, 9, Some(4)),
            (Some(2), 4, 3, None),
            (None, 4, 1, None),
            (Some(2), 4, 2, None),
        ];
        for (min, max, current, want) in cases {
            let p = plan(&hpa(min, max), Target::Deployment(&dep(current)), now());
            assert_eq!(
                p.scale_target_to, want,
                "min {min:?} max {max} current {current}"
            );
            let status = p.status.unwrap();
            assert_eq!(status["desiredReplicas"], want.unwrap_or(current));
            assert_eq!(status["currentReplicas"], current);
            if want.is_some() {
                assert_eq!(status["lastScaleTime"], "2024-05-01T10:00:00Z");
                assert_eq!(cond(&status, "AbleToScale"), ("True", "SucceededRescale"));
            } else {
                assert!(status.get("lastScaleTime").is_none());
                assert_eq!(cond(&status, "AbleToScale"), ("True", "ReadyForNewScale"));
                assert_eq!(cond(&status, "ScalingActive"), ("True", "ValidMetricFound"));
            }
        }
    }

    #[test]
    fn a_target_scaled_to_zero_is_left_alone() {
        let p = plan(&hpa(Some(2), 4), Target::Deployment(&dep(0)), now());
        assert_eq!(p.scale_target_to, None);
        let status = p.status.unwrap();
        assert_eq!(status["desiredReplicas"], 0);
        assert!(status.get("currentReplicas").is_none());
        assert_eq!(cond(&status, "ScalingActive"), ("False", "ScalingDisabled"));
    }

    #[test]
    fn min_zero_allows_zero() {
        let p = plan(&hpa(Some(0), 4), Target::Deployment(&dep(0)), now());
        assert_eq!(p.scale_target_to, None);
        assert_eq!(
            cond(&p.status.unwrap(), "ScalingActive"),
            ("True", "ValidMetricFound")
        );
    }

    #[test]
    fn a_settled_hpa_writes_nothing_and_keeps_transition_times() {
        let mut h = hpa(Some(2), 4);
        let first = plan(&h, Target::Deployment(&dep(3)), now());
        h["status"] = first.status.unwrap();
        let later: Timestamp = "2024-05-01T11:00:00Z".parse().unwrap();
        let second = plan(&h, Target::Deployment(&dep(3)), later);
        assert_eq!(second, Plan::default());
        // After a rescale the next pass reports the new size as settled.
        let third = plan(&h, Target::Deployment(&dep(9)), later).status.unwrap();
        assert_eq!(
            third["conditions"][0]["lastTransitionTime"],
            "2024-05-01T10:00:00Z"
        );
    }

    #[test]
    fn a_missing_or_unsupported_target_is_reported() {
        let p = plan(&hpa(Some(2), 4), Target::Missing, now());
        assert_eq!(p.scale_target_to, None);
        let status = p.status.unwrap();
        assert_eq!(cond(&status, "AbleToScale"), ("False", "FailedGetScale"));
        assert!(
            status["conditions"][0]["message"]
                .as_str()
                .unwrap()
                .contains("deployments.apps \"podinfo\" not found")
        );
        let mut h = hpa(Some(2), 4);
        h["spec"]["scaleTargetRef"] =
            json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db"});
        assert_eq!(target_deployment(&h), None);
        let status = plan(&h, Target::Unsupported, now()).status.unwrap();
        assert!(
            status["conditions"][0]["message"]
                .as_str()
                .unwrap()
                .contains("no matches for kind \"StatefulSet\" in group \"apps\"")
        );
    }

    #[test]
    fn v2beta1_shapes_are_read() {
        let h = json!({
            "apiVersion": "autoscaling/v2beta1", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "p", "namespace": "test"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                     "minReplicas": 2, "maxReplicas": 4,
                     "metrics": [{"type": "Resource", "resource": {"name": "cpu", "targetAverageUtilization": 99}}]},
        });
        assert_eq!(target_deployment(&h), Some("podinfo"));
        assert_eq!(
            plan(&h, Target::Deployment(&dep(1)), now()).scale_target_to,
            Some(2)
        );
        let settled = plan(&h, Target::Deployment(&dep(3)), now()).status.unwrap();
        let msg = settled["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "ScalingActive")
            .unwrap()["message"]
            .clone();
        assert_eq!(
            msg,
            "the HPA was able to successfully calculate a replica count from cpu resource utilization (percentage of request)"
        );
    }
}
