//! Metric query templates: the part of Go `text/template` that Flagger's builtin queries and
//! MetricTemplates use (flagger-behavior §4.4).
//!
//! Contract:
//! - Actions are `{{ ... }}`; `{{- ` trims all whitespace before the action, ` -}}` all whitespace
//!   after it (the dash must be followed/preceded by whitespace, as in Go).
//! - Supported actions: the zero-argument functions `name`, `namespace`, `target`, `service`,
//!   `ingress`, `route`, `interval`; `variables.KEY` and `index variables "KEY"`; comments
//!   `{{/* ... */}}`.
//! - A missing variable, an unknown function or any other action is an error naming it; rendering
//!   never panics and never silently produces an empty value (upstream runs with
//!   `missingkey=error`).

use std::collections::BTreeMap;

use crate::spec::{CanarySpec, MetricCheck};

/// Values a query template can refer to.
#[derive(Debug, Clone, Copy)]
pub struct TemplateVars<'a> {
    /// Canary name.
    pub name: &'a str,
    pub namespace: &'a str,
    /// `spec.targetRef.name`.
    pub target: &'a str,
    /// `spec.service.name` (defaults to the target name).
    pub service: &'a str,
    /// `spec.ingressRef.name`, or the target name.
    pub ingress: &'a str,
    /// `spec.routeRef.name`, or the target name.
    pub route: &'a str,
    /// The metric's `interval` (see [`MetricCheck::window`]).
    pub interval: &'a str,
    /// `templateVariables`.
    pub variables: &'a BTreeMap<String, String>,
}

impl<'a> TemplateVars<'a> {
    /// The variables upstream gives the query of `check` of canary `spec`.
    pub fn for_check(spec: &'a CanarySpec, check: &'a MetricCheck) -> Self {
        Self {
            name: &spec.name,
            namespace: &spec.namespace,
            target: &spec.target_ref.name,
            service: &spec.service.name,
            ingress: &spec.target_ref.name,
            route: &spec.target_ref.name,
            interval: &check.window,
            variables: &check.template_variables,
        }
    }
}

/// Why a template could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unclosed action starting at byte {offset}: missing \"}}}}\"")]
    Unclosed { offset: usize },
    #[error("map has no entry for key {key:?} (templateVariables.{key} is not set)")]
    MissingVariable { key: String },
    #[error(
        "function {name:?} not defined (known: name, namespace, target, service, ingress, route, interval, variables)"
    )]
    UnknownFunction { name: String },
    #[error("unsupported template action {action:?}")]
    Unsupported { action: String },
}

/// Renders `template` with `vars`.
pub fn render(template: &str, vars: &TemplateVars<'_>) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    let mut trim_next_text = false;
    while let Some(start) = rest.find("{{") {
        let text = &rest[..start];
        let text = if trim_next_text {
            text.trim_start()
        } else {
            text
        };
        out.push_str(text);
        let after_open = &rest[start + 2..];
        let offset = template.len() - rest.len() + start;
        let end = after_open
            .find("}}")
            .ok_or(TemplateError::Unclosed { offset })?;
        let mut action = &after_open[..end];
        if let Some(inner) = strip_trim_left(action) {
            out.truncate(out.trim_end().len());
            action = inner;
        }
        trim_next_text = false;
        if let Some(inner) = strip_trim_right(action) {
            trim_next_text = true;
            action = inner;
        }
        out.push_str(&evaluate(action.trim(), vars)?);
        rest = &after_open[end + 2..];
    }
    out.push_str(if trim_next_text {
        rest.trim_start()
    } else {
        rest
    });
    Ok(out)
}

/// `{{- x`: a dash right after the delimiters followed by whitespace (Go's rule, so `{{-3}}`
/// stays the number -3).
fn strip_trim_left(action: &str) -> Option<&str> {
    let inner = action.strip_prefix('-')?;
    inner.starts_with(char::is_whitespace).then_some(inner)
}

fn strip_trim_right(action: &str) -> Option<&str> {
    let inner = action.strip_suffix('-')?;
    inner.ends_with(char::is_whitespace).then_some(inner)
}

fn evaluate(action: &str, vars: &TemplateVars<'_>) -> Result<String, TemplateError> {
    if action.starts_with("/*") && action.ends_with("*/") {
        return Ok(String::new());
    }
    let words: Vec<&str> = action.split_whitespace().collect();
    match words.as_slice() {
        [single] => {
            if let Some(key) = single.strip_prefix("variables.") {
                return lookup(vars, key);
            }
            let value = match *single {
                "name" => vars.name,
                "namespace" => vars.namespace,
                "target" => vars.target,
                "service" => vars.service,
                "ingress" => vars.ingress,
                "route" => vars.route,
                "interval" => vars.interval,
                other if is_identifier(other) && other != "variables" => {
                    return Err(TemplateError::UnknownFunction {
                        name: other.to_owned(),
                    });
                }
                _ => {
                    return Err(TemplateError::Unsupported {
                        action: action.to_owned(),
                    });
                }
            };
            Ok(value.to_owned())
        }
        ["index", "variables", key] => match unquote(key) {
            Some(key) => lookup(vars, key),
            None => Err(TemplateError::Unsupported {
                action: action.to_owned(),
            }),
        },
        _ => Err(TemplateError::Unsupported {
            action: action.to_owned(),
        }),
    }
}

fn lookup(vars: &TemplateVars<'_>, key: &str) -> Result<String, TemplateError> {
    vars.variables
        .get(key)
        .cloned()
        .ok_or_else(|| TemplateError::MissingVariable {
            key: key.to_owned(),
        })
}

fn is_identifier(s: &str) -> bool {
    s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && s.starts_with(|c: char| c.is_ascii_alphabetic())
}

fn unquote(s: &str) -> Option<&str> {
    s.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .or_else(|| s.strip_prefix('`').and_then(|s| s.strip_suffix('`')))
}

/// Collapses every run of whitespace to one space, as upstream does before sending a query
/// (a leading or trailing run stays as one space).
pub fn collapse_whitespace(query: &str) -> String {
    let mut out = String::with_capacity(query.len());
    let mut in_space = false;
    for c in query.chars() {
        if c.is_whitespace() {
            if !in_space {
                out.push(' ');
            }
            in_space = true;
        } else {
            out.push(c);
            in_space = false;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn vars(variables: &BTreeMap<String, String>) -> TemplateVars<'_> {
        TemplateVars {
            name: "podinfo",
            namespace: "test",
            target: "podinfo",
            service: "podinfo-svc",
            ingress: "podinfo-ing",
            route: "podinfo-route",
            interval: "1m",
            variables,
        }
    }

    #[test]
    fn substitutes_every_function_with_or_without_spaces() {
        let v = BTreeMap::new();
        let out = render(
            "{{name}} {{ namespace }} {{  target  }} {{ service }} {{ ingress }} {{ route }} [{{ interval }}]",
            &vars(&v),
        )
        .unwrap();
        assert_eq!(
            out,
            "podinfo test podinfo podinfo-svc podinfo-ing podinfo-route [1m]"
        );
    }

    #[test]
    fn variables_by_field_and_by_index() {
        let v = BTreeMap::from([("code".to_owned(), "5..".to_owned())]);
        let out = render(
            r#"code=~"{{ variables.code }}",x="{{ index variables "code" }}""#,
            &vars(&v),
        )
        .unwrap();
        assert_eq!(out, r#"code=~"5..",x="5..""#);
    }

    #[test]
    fn missing_variable_is_an_error_naming_it() {
        let v = BTreeMap::new();
        let err = render("rate(x{a=\"{{ variables.region }}\"}[1m])", &vars(&v)).unwrap_err();
        assert_eq!(
            err,
            TemplateError::MissingVariable {
                key: "region".into()
            }
        );
        assert!(err.to_string().contains("region"), "{err}");
    }

    #[test]
    fn trim_markers_remove_surrounding_whitespace() {
        let v = BTreeMap::new();
        let out = render(
            "a  \n  {{- name -}}  \n  b {{- /* comment */ -}} c",
            &vars(&v),
        )
        .unwrap();
        assert_eq!(out, "apodinfobc");
        // A dash without whitespace is not a trim marker.
        let err = render("x {{-name}}", &vars(&v)).unwrap_err();
        assert!(matches!(err, TemplateError::Unsupported { .. }), "{err:?}");
    }

    #[test]
    fn unknown_function_and_unclosed_action_are_errors() {
        let v = BTreeMap::new();
        assert_eq!(
            render("{{ nmae }}", &vars(&v)).unwrap_err(),
            TemplateError::UnknownFunction {
                name: "nmae".into()
            }
        );
        assert_eq!(
            render("sum({{ name )", &vars(&v)).unwrap_err(),
            TemplateError::Unclosed { offset: 4 }
        );
        assert!(matches!(
            render("{{ printf \"%s\" name }}", &vars(&v)).unwrap_err(),
            TemplateError::Unsupported { .. }
        ));
        assert!(matches!(
            render("{{ variables }}", &vars(&v)).unwrap_err(),
            TemplateError::Unsupported { .. }
        ));
    }

    #[test]
    fn text_without_actions_is_unchanged() {
        let v = BTreeMap::new();
        assert_eq!(render("vector(1)", &vars(&v)).unwrap(), "vector(1)");
        assert_eq!(render("a } b { c", &vars(&v)).unwrap(), "a } b { c");
    }

    #[test]
    fn whitespace_collapses_like_upstream() {
        assert_eq!(
            collapse_whitespace("\n\tsum(\n\t\trate(x[1m])\n\t) \n\t* 100"),
            " sum( rate(x[1m]) ) * 100"
        );
    }
}
