//! The generated CRDs: structural schema rules, versions, printer columns, and that upstream's
//! manifests (including the seed's v1alpha3 Canary) pass validation and survive pruning unchanged.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use flagger_actors::crd::{self, AlertProvider, Canary, MetricTemplate};
use serde_json::{Value, json};

fn crd_json(file_name: &str) -> Value {
    let generated = crd::crds()
        .into_iter()
        .find(|g| g.file_name == file_name)
        .expect("crd exists");
    serde_json::to_value(&generated.crd).unwrap()
}

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    serde_saphyr::from_str(&text).unwrap()
}

fn version<'a>(crd: &'a Value, name: &str) -> &'a Value {
    crd["spec"]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("version {name} missing"))
}

/// Kubernetes' structural schema rules (the subset our schemas can break), collected as messages.
fn structural_violations(schema: &Value, path: &str, out: &mut Vec<String>) {
    let Some(node) = schema.as_object() else {
        out.push(format!("{path}: schema is not an object"));
        return;
    };
    let int_or_string = node.get("x-kubernetes-int-or-string") == Some(&json!(true));
    let preserve = node.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true));
    for banned in [
        "$ref",
        "definitions",
        "$defs",
        "$schema",
        "anyOf",
        "oneOf",
        "allOf",
        "not",
    ] {
        if node.contains_key(banned) {
            out.push(format!("{path}: has {banned}"));
        }
    }
    if node.contains_key("default") {
        out.push(format!(
            "{path}: has a default (the server would fill it in)"
        ));
    }
    match node.get("type").and_then(Value::as_str) {
        None if int_or_string || preserve => {}
        None => out.push(format!("{path}: no type")),
        Some(_) if int_or_string => out.push(format!("{path}: int-or-string with a type")),
        Some("object") => {
            if node.contains_key("properties") && node.contains_key("additionalProperties") {
                out.push(format!("{path}: both properties and additionalProperties"));
            }
            if let Some(props) = node.get("properties").and_then(Value::as_object) {
                for (key, sub) in props {
                    structural_violations(sub, &format!("{path}.{key}"), out);
                }
            }
            if let Some(extra) = node.get("additionalProperties") {
                structural_violations(extra, &format!("{path}.*"), out);
            }
            if let Some(required) = node.get("required").and_then(Value::as_array) {
                for r in required {
                    let key = r.as_str().unwrap_or_default();
                    if node["properties"].get(key).is_none() {
                        out.push(format!("{path}: required {key} is not a property"));
                    }
                }
            }
        }
        Some("array") => match node.get("items") {
            Some(items) => structural_violations(items, &format!("{path}[]"), out),
            None => out.push(format!("{path}: array without items")),
        },
        Some("string" | "integer" | "number" | "boolean") => {}
        Some(other) => out.push(format!("{path}: unknown type {other}")),
    }
}

/// What the API server does to an object: validate types, enums and required fields (errors are
/// collected), and prune fields the schema does not know.
fn validate_and_prune(value: &mut Value, schema: &Value, path: &str, errors: &mut Vec<String>) {
    if value.is_null() {
        if schema.get("nullable") != Some(&json!(true)) {
            errors.push(format!("{path}: null"));
        }
        return;
    }
    if schema.get("x-kubernetes-int-or-string") == Some(&json!(true)) {
        if !(value.is_i64() || value.is_u64() || value.is_string()) {
            errors.push(format!("{path}: not int-or-string"));
        }
        return;
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        errors.push(format!("{path}: {value} not in enum"));
    }
    let preserve = schema.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true));
    match schema.get("type").and_then(Value::as_str) {
        Some("object") => {
            let Some(map) = value.as_object_mut() else {
                errors.push(format!("{path}: not an object"));
                return;
            };
            for r in schema["required"].as_array().into_iter().flatten() {
                if !map.contains_key(r.as_str().unwrap()) {
                    errors.push(format!("{path}.{}: required", r.as_str().unwrap()));
                }
            }
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                if !preserve {
                    map.retain(|k, _| props.contains_key(k));
                }
                for (k, v) in map.iter_mut() {
                    if let Some(sub) = props.get(k) {
                        validate_and_prune(v, sub, &format!("{path}.{k}"), errors);
                    }
                }
            } else if let Some(extra) = schema.get("additionalProperties") {
                for (k, v) in map.iter_mut() {
                    validate_and_prune(v, extra, &format!("{path}.{k}"), errors);
                }
            } else if !preserve {
                map.clear();
            }
        }
        Some("array") => match value.as_array_mut() {
            Some(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    validate_and_prune(item, &schema["items"], &format!("{path}[{i}]"), errors);
                }
            }
            None => errors.push(format!("{path}: not an array")),
        },
        Some("string") if !value.is_string() => errors.push(format!("{path}: not a string")),
        Some("integer") if !(value.is_i64() || value.is_u64()) => {
            errors.push(format!("{path}: not an integer"))
        }
        Some("number") if !value.is_number() => errors.push(format!("{path}: not a number")),
        Some("boolean") if !value.is_boolean() => errors.push(format!("{path}: not a boolean")),
        _ => {}
    }
}

/// Applies `manifest` as the API server would for its apiVersion; returns the stored object's
/// spec, or the validation errors.
fn apply(crd: &Value, manifest: &Value) -> Result<Value, Vec<String>> {
    let api_version = manifest["apiVersion"].as_str().unwrap();
    let (group, ver) = api_version.split_once('/').unwrap();
    assert_eq!(group, crd["spec"]["group"]);
    let v = version(crd, ver);
    assert_eq!(v["served"], true, "{api_version} must be served");
    let schema = &v["schema"]["openAPIV3Schema"];
    let mut body = json!({ "spec": manifest["spec"].clone() });
    if let Some(status) = manifest.get("status") {
        body["status"] = status.clone();
    }
    let mut errors = Vec::new();
    validate_and_prune(&mut body, schema, "", &mut errors);
    if errors.is_empty() {
        Ok(body["spec"].clone())
    } else {
        Err(errors)
    }
}

#[test]
fn every_crd_schema_is_structural_and_has_no_server_side_defaults() {
    for generated in crd::crds() {
        let crd = serde_json::to_value(&generated.crd).unwrap();
        for v in crd["spec"]["versions"].as_array().unwrap() {
            let mut violations = Vec::new();
            structural_violations(&v["schema"]["openAPIV3Schema"], "", &mut violations);
            assert!(
                violations.is_empty(),
                "{} {}: {violations:#?}",
                generated.file_name,
                v["name"]
            );
        }
    }
}

#[test]
fn crds_are_namespaced_in_flagger_app_with_status_category_all_and_kept_by_helm() {
    let expected = [
        ("canary.yaml", "canaries.flagger.app", "Canary", "canaries"),
        (
            "metrictemplate.yaml",
            "metrictemplates.flagger.app",
            "MetricTemplate",
            "metrictemplates",
        ),
        (
            "alertprovider.yaml",
            "alertproviders.flagger.app",
            "AlertProvider",
            "alertproviders",
        ),
    ];
    let generated = crd::crds();
    assert_eq!(generated.len(), expected.len());
    for (g, (file, name, kind, plural)) in generated.iter().zip(expected) {
        let crd = serde_json::to_value(&g.crd).unwrap();
        assert_eq!(g.file_name, file);
        assert_eq!(crd["metadata"]["name"], name);
        assert_eq!(
            crd["metadata"]["annotations"]["helm.sh/resource-policy"],
            "keep"
        );
        assert_eq!(crd["spec"]["group"], "flagger.app");
        assert_eq!(crd["spec"]["scope"], "Namespaced");
        assert_eq!(crd["spec"]["names"]["kind"], kind);
        assert_eq!(crd["spec"]["names"]["plural"], plural);
        assert_eq!(crd["spec"]["names"]["categories"], json!(["all"]));
        assert_eq!(crd["spec"]["conversion"], json!({"strategy": "None"}));
        let beta = version(&crd, "v1beta1");
        assert_eq!(
            (beta["served"].clone(), beta["storage"].clone()),
            (json!(true), json!(true))
        );
        assert_eq!(beta["subresources"]["status"], json!({}));
    }
}

#[test]
fn canary_serves_v1alpha3_with_the_same_schema_but_stores_v1beta1() {
    let crd = crd_json("canary.yaml");
    let versions = crd["spec"]["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 2);
    let (beta, alpha) = (version(&crd, "v1beta1"), version(&crd, "v1alpha3"));
    assert_eq!(alpha["served"], true);
    assert_eq!(alpha["storage"], false);
    assert_eq!(alpha["schema"], beta["schema"]);
    assert_eq!(alpha["subresources"], beta["subresources"]);
    let spec_props = &beta["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
    assert!(spec_props.get("analysis").is_some());
    assert!(spec_props.get("canaryAnalysis").is_some());
    let without_description = |v: &Value| {
        let mut v = v.clone();
        v.as_object_mut().unwrap().remove("description");
        v
    };
    assert_eq!(
        without_description(&spec_props["analysis"]),
        without_description(&spec_props["canaryAnalysis"])
    );
}

#[test]
fn canary_printer_columns_match_upstream() {
    let crd = crd_json("canary.yaml");
    let columns = |v: &Value| -> Vec<(String, String, String, i64)> {
        v["additionalPrinterColumns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["name"].as_str().unwrap().to_owned(),
                    c["jsonPath"].as_str().unwrap().to_owned(),
                    c["type"].as_str().unwrap().to_owned(),
                    c["priority"].as_i64().unwrap_or(0),
                )
            })
            .collect()
    };
    let col =
        |n: &str, p: &str, t: &str, prio: i64| (n.to_owned(), p.to_owned(), t.to_owned(), prio);
    let upstream = vec![
        col("Status", ".status.phase", "string", 0),
        col("Weight", ".status.canaryWeight", "string", 0),
        col("Suspended", ".spec.suspend", "boolean", 1),
        col("FailedChecks", ".status.failedChecks", "string", 1),
        col("Interval", ".spec.analysis.interval", "string", 1),
        col("Mirror", ".spec.analysis.mirror", "boolean", 1),
        col("StepWeight", ".spec.analysis.stepWeight", "string", 1),
        col("StepWeights", ".spec.analysis.stepWeights", "string", 1),
        col("MaxWeight", ".spec.analysis.maxWeight", "string", 1),
        col(
            "LastTransitionTime",
            ".status.lastTransitionTime",
            "string",
            0,
        ),
    ];
    assert_eq!(columns(version(&crd, "v1beta1")), upstream);
    // `kubectl get canaries` shows NAME STATUS WEIGHT LASTTRANSITIONTIME.
    let default_columns: Vec<_> = upstream
        .iter()
        .filter(|c| c.3 == 0)
        .map(|c| c.0.as_str())
        .collect();
    assert_eq!(default_columns, ["Status", "Weight", "LastTransitionTime"]);
    let legacy: Vec<_> = upstream
        .iter()
        .map(|c| {
            (
                c.0.clone(),
                c.1.replace(".spec.analysis.", ".spec.canaryAnalysis."),
                c.2.clone(),
                c.3,
            )
        })
        .collect();
    assert_eq!(columns(version(&crd, "v1alpha3")), legacy);

    let provider = crd_json("metrictemplate.yaml");
    assert_eq!(
        version(&provider, "v1beta1")["additionalPrinterColumns"],
        json!([{"jsonPath": ".spec.provider.type", "name": "Provider", "type": "string"}])
    );
    let alert = crd_json("alertprovider.yaml");
    assert_eq!(
        version(&alert, "v1beta1")["additionalPrinterColumns"],
        json!([{"jsonPath": ".spec.type", "name": "Type", "type": "string"}])
    );
}

#[test]
fn seed_v1alpha3_canary_is_accepted_and_nothing_is_pruned() {
    let manifest = fixture("podinfo-canary-v1alpha3.yaml");
    let stored = apply(&crd_json("canary.yaml"), &manifest).unwrap();
    assert_eq!(stored, manifest["spec"]);
}

#[test]
fn upstream_v1beta1_examples_are_accepted_and_nothing_is_pruned() {
    for (file, crd_file) in [
        ("podinfo-canary-v1beta1.yaml", "canary.yaml"),
        ("podinfo-ab-v1beta1.yaml", "canary.yaml"),
        ("metric-template.yaml", "metrictemplate.yaml"),
        ("alert-provider.yaml", "alertprovider.yaml"),
    ] {
        let manifest = fixture(file);
        let stored =
            apply(&crd_json(crd_file), &manifest).unwrap_or_else(|e| panic!("{file}: {e:#?}"));
        assert_eq!(stored, manifest["spec"], "{file}");
    }
}

#[test]
fn istio_pass_through_objects_keep_unknown_fields_while_typos_elsewhere_are_pruned() {
    let mut manifest = fixture("podinfo-canary-v1beta1.yaml");
    manifest["spec"]["service"]["trafficPolicy"]["connectionPool"] =
        json!({"http": {"http1MaxPendingRequests": 10, "someFutureIstioField": true}});
    manifest["spec"]["analysis"]["stepWieght"] = json!(5);
    let stored = apply(&crd_json("canary.yaml"), &manifest).unwrap();
    assert_eq!(
        stored["service"]["trafficPolicy"]["connectionPool"]["http"]["someFutureIstioField"],
        true
    );
    assert!(stored["analysis"].get("stepWieght").is_none());
}

#[test]
fn the_schema_rejects_what_upstream_rejects() {
    let crd = crd_json("canary.yaml");
    let base = fixture("podinfo-canary-v1beta1.yaml");
    type Mutation = fn(&mut Value);
    let cases: [(&str, Mutation); 5] = [
        (".spec.targetRef: required", |m| {
            m["spec"].as_object_mut().unwrap().remove("targetRef");
        }),
        (".spec.service.port: required", |m| {
            m["spec"]["service"].as_object_mut().unwrap().remove("port");
        }),
        (".spec.analysis.maxWeight: not an integer", |m| {
            m["spec"]["analysis"]["maxWeight"] = json!("50")
        }),
        (
            ".spec.analysis.webhooks[0].type: \"pre-rolout\" not in enum",
            |m| m["spec"]["analysis"]["webhooks"][0]["type"] = json!("pre-rolout"),
        ),
        (".spec.analysis.metrics[0].name: required", |m| {
            m["spec"]["analysis"]["metrics"][0]
                .as_object_mut()
                .unwrap()
                .remove("name");
        }),
    ];
    for (expected, mutate) in cases {
        let mut manifest = base.clone();
        mutate(&mut manifest);
        let errors = apply(&crd, &manifest).unwrap_err();
        assert_eq!(errors, vec![expected.to_owned()]);
    }
}

#[test]
fn typed_objects_read_the_fixtures() {
    let seed: Canary = serde_json::from_value(fixture("podinfo-canary-v1alpha3.yaml")).unwrap();
    assert!(seed.spec.analysis.is_none());
    assert_eq!(
        seed.spec.canary_analysis.as_ref().unwrap().step_weight,
        Some(10)
    );
    let template: MetricTemplate = serde_json::from_value(fixture("metric-template.yaml")).unwrap();
    assert_eq!(
        template.spec.provider.as_ref().unwrap().kind().unwrap(),
        flagger_actors::crd::MetricProviderType::Prometheus
    );
    let alert: AlertProvider = serde_json::from_value(fixture("alert-provider.yaml")).unwrap();
    assert_eq!(
        alert.spec.kind().unwrap(),
        flagger_actors::crd::AlertProviderType::Slack
    );
}
