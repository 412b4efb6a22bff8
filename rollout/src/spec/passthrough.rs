//! Shape checks of the Istio blocks a Canary passes through to the VirtualService.
//!
//! The CRD keeps `match[]` items (and `corsPolicy.allowOrigins[]`) as free-form objects
//! (`x-kubernetes-preserve-unknown-fields`), so the API server accepts any JSON there. Istio would
//! refuse a VirtualService built from a malformed one on every tick, far from the field the user
//! wrote; these checks name that field instead. They check what Istio's `HTTPMatchRequest` and
//! `StringMatch` accept (field names and JSON types), not the semantics of the values.

use serde_json::Value;

use super::SpecError;

/// `HTTPMatchRequest` fields whose value is a `StringMatch`.
const STRING_MATCH_FIELDS: &[&str] = &["uri", "scheme", "method", "authority"];
/// `HTTPMatchRequest` fields whose value is a map of header/parameter name to `StringMatch`.
const STRING_MATCH_MAP_FIELDS: &[&str] = &["headers", "queryParams", "withoutHeaders"];
/// `HTTPMatchRequest` fields whose value is a string.
const STRING_FIELDS: &[&str] = &["name", "sourceNamespace", "statPrefix"];
/// Every `HTTPMatchRequest` field, for the error message.
const ALL_FIELDS: &str = "name, uri, scheme, method, authority, headers, port, sourceLabels, gateways, queryParams, ignoreUriCase, withoutHeaders, sourceNamespace, statPrefix";
/// `StringMatch` kinds (`suffix` is Flagger's addition for headers).
const STRING_MATCH_KINDS: &[&str] = &["exact", "prefix", "regex", "suffix"];

/// Short name of a JSON value's type, for messages.
fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "object",
    }
}

fn error(errors: &mut Vec<SpecError>, field: String, problem: String) {
    errors.push(SpecError { field, problem });
}

/// Checks one Istio `HTTPMatchRequest` at `field` (e.g. `spec.analysis.match[0]`).
pub(super) fn check_http_match(field: &str, value: &Value, errors: &mut Vec<SpecError>) {
    let Some(map) = value.as_object() else {
        error(
            errors,
            field.to_owned(),
            format!(
                "must be an HTTPMatchRequest object, got {}",
                type_name(value)
            ),
        );
        return;
    };
    for (key, v) in map {
        let at = format!("{field}.{key}");
        match key.as_str() {
            k if STRING_MATCH_FIELDS.contains(&k) => check_string_match(&at, v, errors),
            k if STRING_MATCH_MAP_FIELDS.contains(&k) => match v.as_object() {
                Some(entries) => {
                    for (name, m) in entries {
                        check_string_match(&format!("{at}.{name}"), m, errors);
                    }
                }
                None => error(
                    errors,
                    at,
                    format!("must be a map of name to StringMatch, got {}", type_name(v)),
                ),
            },
            k if STRING_FIELDS.contains(&k) => {
                if !v.is_string() {
                    error(
                        errors,
                        at,
                        format!("must be a string, got {}", type_name(v)),
                    );
                }
            }
            "sourceLabels" => match v.as_object() {
                Some(labels) => {
                    for (name, label) in labels {
                        if !label.is_string() {
                            error(
                                errors,
                                format!("{at}.{name}"),
                                format!("must be a string, got {}", type_name(label)),
                            );
                        }
                    }
                }
                None => error(
                    errors,
                    at,
                    format!("must be a map of label to value, got {}", type_name(v)),
                ),
            },
            "gateways" => match v.as_array() {
                Some(items) => {
                    for (i, g) in items.iter().enumerate() {
                        if !g.is_string() {
                            error(
                                errors,
                                format!("{at}[{i}]"),
                                format!("must be a string, got {}", type_name(g)),
                            );
                        }
                    }
                }
                None => error(
                    errors,
                    at,
                    format!("must be a list of strings, got {}", type_name(v)),
                ),
            },
            "port" => {
                if !v.as_u64().is_some_and(|p| (1..=65535).contains(&p)) {
                    error(
                        errors,
                        at,
                        format!("must be a port within 1-65535, got {v}"),
                    );
                }
            }
            "ignoreUriCase" => {
                if !v.is_boolean() {
                    error(
                        errors,
                        at,
                        format!("must be a boolean, got {}", type_name(v)),
                    );
                }
            }
            _ => error(
                errors,
                at,
                format!("unknown HTTPMatchRequest field, valid fields: {ALL_FIELDS}"),
            ),
        }
    }
}

/// Checks one Istio `StringMatch` (`{exact|prefix|regex|suffix: <string>}`, at most one).
pub(super) fn check_string_match(field: &str, value: &Value, errors: &mut Vec<SpecError>) {
    let Some(map) = value.as_object() else {
        error(
            errors,
            field.to_owned(),
            format!(
                "must be a StringMatch object ({{exact|prefix|regex|suffix: <string>}}), got {}",
                type_name(value)
            ),
        );
        return;
    };
    if map.len() > 1 {
        error(
            errors,
            field.to_owned(),
            format!(
                "a StringMatch takes one of exact, prefix, regex, suffix; got {}",
                map.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        );
        return;
    }
    for (kind, v) in map {
        let at = format!("{field}.{kind}");
        if !STRING_MATCH_KINDS.contains(&kind.as_str()) {
            error(
                errors,
                at,
                "unknown StringMatch kind, valid kinds: exact, prefix, regex, suffix".to_owned(),
            );
        } else if !v.is_string() {
            error(
                errors,
                at,
                format!("must be a string, got {}", type_name(v)),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(value: Value) -> Vec<String> {
        let mut errors = Vec::new();
        check_http_match("m", &value, &mut errors);
        errors.into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn upstream_examples_pass() {
        assert!(
            fields(
                json!({"headers": {"x-canary": {"exact": "insider"}}, "sourceLabels": {"app": "x"}})
            )
            .is_empty()
        );
        assert!(
            fields(
                json!({"uri": {"prefix": "/api"}, "port": 80, "ignoreUriCase": true,
                "queryParams": {"q": {"regex": "^a"}}, "gateways": ["mesh"], "name": "n"})
            )
            .is_empty()
        );
        assert!(
            fields(json!({"headers": {"cookie": {"regex": "^(.*?;)?(canary=always)(;.*)?$"}}}))
                .is_empty()
        );
    }

    #[test]
    fn each_wrong_shape_names_its_field() {
        assert_eq!(fields(json!("x-canary")), ["m"]);
        assert_eq!(fields(json!({"headers": "x-canary"})), ["m.headers"]);
        assert_eq!(
            fields(json!({"headers": {"x": "insider"}})),
            ["m.headers.x"]
        );
        assert_eq!(
            fields(json!({"headers": {"x": {"exact": 5}}})),
            ["m.headers.x.exact"]
        );
        assert_eq!(
            fields(json!({"headers": {"x": {"equals": "a"}}})),
            ["m.headers.x.equals"]
        );
        assert_eq!(
            fields(json!({"headers": {"x": {"exact": "a", "prefix": "b"}}})),
            ["m.headers.x"]
        );
        assert_eq!(fields(json!({"uri": ["/api"]})), ["m.uri"]);
        assert_eq!(fields(json!({"port": "http"})), ["m.port"]);
        assert_eq!(fields(json!({"port": 70000})), ["m.port"]);
        assert_eq!(
            fields(json!({"sourceLabels": {"app": 1}})),
            ["m.sourceLabels.app"]
        );
        assert_eq!(fields(json!({"gateways": ["mesh", 3]})), ["m.gateways[1]"]);
        assert_eq!(fields(json!({"ignoreUriCase": "yes"})), ["m.ignoreUriCase"]);
        assert_eq!(fields(json!({"header": {}})), ["m.header"]);
    }
}
