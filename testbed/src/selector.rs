//! Label and field selectors, as the Kubernetes API server parses and evaluates them.
//!
//! Label selectors ([`LabelSelector::parse`]) accept the full string syntax of
//! `k8s.io/apimachinery/pkg/labels`: comma-separated requirements that must all hold, each one of
//! `key=value`, `key==value`, `key!=value`, `key in (a,b)`, `key notin (a,b)`, `key` (exists),
//! `!key` (does not exist) and the integer comparisons `key>3`, `key<3`. Whitespace around tokens
//! is ignored; keys must be qualified names (optional DNS-subdomain prefix + `/` + name of at most
//! 63 characters) and values valid label values, otherwise parsing fails with a message naming the
//! offending key or value. `!=` and `notin` also match objects that lack the label, as upstream.
//! The empty string selects everything.
//!
//! [`LabelSelector::from_api`] converts a `metav1.LabelSelector` object (`matchLabels` +
//! `matchExpressions` with `In`/`NotIn`/`Exists`/`DoesNotExist`). As upstream's
//! `LabelSelectorAsSelector`: `{}` selects everything and JSON `null` selects nothing. A Service's
//! `spec.selector` is a plain label map, not a `LabelSelector`: use [`LabelSelector::from_map`],
//! and note that the endpoints logic of a real cluster treats an empty or missing Service selector
//! as "selects no pods"; that decision is the caller's.
//!
//! Field selectors ([`FieldSelector::parse`]) accept `path=value`, `path==value` and
//! `path!=value` terms separated by commas, with `\,`, `\=` and `\\` escapes in values. Unlike the
//! real server, which accepts only a few fields per resource, any dotted path is allowed; a missing
//! field (or `null`) compares as the empty string, numbers and booleans compare as their JSON text.
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SelectorError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, SelectorError> {
    Err(SelectorError(msg.into()))
}

/// The operator of one label requirement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    /// `key=value` (also what `matchLabels` entries become).
    Equals,
    /// `key==value`.
    DoubleEquals,
    /// `key!=value`: true when the label is absent too.
    NotEquals,
    /// `key in (a,b)`.
    In,
    /// `key notin (a,b)`: true when the label is absent too.
    NotIn,
    /// `key`.
    Exists,
    /// `!key`.
    DoesNotExist,
    /// `key>N`: the label is present and its value is an integer greater than N.
    GreaterThan,
    /// `key<N`.
    LessThan,
}

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    pub key: String,
    pub operator: Operator,
    /// Sorted and deduplicated; empty for `Exists`/`DoesNotExist`.
    pub values: Vec<String>,
}

impl Requirement {
    fn new(
        key: String,
        operator: Operator,
        values: BTreeSet<String>,
    ) -> Result<Self, SelectorError> {
        validate_label_key(&key)?;
        match operator {
            Operator::In | Operator::NotIn if values.is_empty() => {
                return err(format!(
                    "invalid requirement for key {key:?}: for 'in', 'notin' operators, values set can't be empty"
                ));
            }
            Operator::Equals | Operator::DoubleEquals | Operator::NotEquals
                if values.len() != 1 =>
            {
                return err(format!(
                    "invalid requirement for key {key:?}: exact-match compatibility requires one single value"
                ));
            }
            Operator::Exists | Operator::DoesNotExist if !values.is_empty() => {
                return err(format!(
                    "invalid requirement for key {key:?}: values set must be empty for exists and does not exist"
                ));
            }
            Operator::GreaterThan | Operator::LessThan => {
                if values.len() != 1 {
                    return err(format!(
                        "invalid requirement for key {key:?}: for 'Gt', 'Lt' operators, exactly one value is required"
                    ));
                }
                for v in &values {
                    if v.parse::<i64>().is_err() {
                        return err(format!(
                            "invalid requirement for key {key:?}: for 'Gt', 'Lt' operators, the value must be an integer, got {v:?}"
                        ));
                    }
                }
            }
            _ => {}
        }
        if !matches!(operator, Operator::GreaterThan | Operator::LessThan) {
            for v in &values {
                validate_label_value(&key, v)?;
            }
        }
        Ok(Self {
            key,
            operator,
            values: values.into_iter().collect(),
        })
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        let in_set = |v: &String| self.values.iter().any(|x| x == v);
        match self.operator {
            Operator::Equals | Operator::DoubleEquals | Operator::In => value.is_some_and(in_set),
            Operator::NotEquals | Operator::NotIn => !value.is_some_and(in_set),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let (Some(actual), Some(bound)) = (
                    value.and_then(|v| v.parse::<i64>().ok()),
                    self.values.first().and_then(|v| v.parse::<i64>().ok()),
                ) else {
                    return false;
                };
                if self.operator == Operator::GreaterThan {
                    actual > bound
                } else {
                    actual < bound
                }
            }
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let first = self.values.first().map(String::as_str).unwrap_or("");
        let key = &self.key;
        match self.operator {
            Operator::Exists => write!(f, "{key}"),
            Operator::DoesNotExist => write!(f, "!{key}"),
            Operator::Equals => write!(f, "{key}={first}"),
            Operator::DoubleEquals => write!(f, "{key}=={first}"),
            Operator::NotEquals => write!(f, "{key}!={first}"),
            Operator::GreaterThan => write!(f, "{key}>{first}"),
            Operator::LessThan => write!(f, "{key}<{first}"),
            Operator::In => write!(f, "{key} in ({})", join_values(&self.values)),
            Operator::NotIn => write!(f, "{key} notin ({})", join_values(&self.values)),
        }
    }
}

/// A set holding only the empty value prints as `(,)` so that it parses back (`()` is invalid).
fn join_values(values: &[String]) -> String {
    let joined = values.join(",");
    if joined.is_empty() {
        ",".to_string()
    } else {
        joined
    }
}

/// A parsed label selector: full Kubernetes syntax (`a=b,c!=d,e in (x,y),f notin (z),g,!h`),
/// or built from an API `LabelSelector` object (`matchLabels` / `matchExpressions`).
///
/// `Default` selects everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
    /// Set for the `null` API selector, which selects nothing.
    nothing: bool,
}

impl LabelSelector {
    /// A selector that matches every object.
    pub fn everything() -> Self {
        Self::default()
    }

    /// A selector that matches no object (what a `null` API `LabelSelector` means).
    pub fn nothing() -> Self {
        Self {
            requirements: Vec::new(),
            nothing: true,
        }
    }

    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let tokens = lex_labels(s)?;
        let mut parser = Parser { tokens, pos: 0 };
        let mut requirements = Vec::new();
        if parser.peek().is_none() {
            return Ok(Self::default());
        }
        loop {
            requirements.push(parser.requirement()?);
            match parser.next() {
                None => break,
                Some(Token::Comma) => continue,
                Some(other) => {
                    return err(format!(
                        "unable to parse requirement: found '{other}', expected: ','"
                    ));
                }
            }
        }
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Self {
            requirements,
            nothing: false,
        })
    }

    /// Converts a `metav1.LabelSelector` object. `null` selects nothing, `{}` everything.
    pub fn from_api(selector: &Value) -> Result<Self, SelectorError> {
        let obj = match selector {
            Value::Null => return Ok(Self::nothing()),
            Value::Object(o) => o,
            other => {
                return err(format!(
                    "label selector must be an object, got {}",
                    type_name(other)
                ));
            }
        };
        let mut requirements = Vec::new();
        for (field, value) in obj {
            match field.as_str() {
                "matchLabels" => {
                    let labels = match value {
                        Value::Null => continue,
                        Value::Object(m) => m,
                        other => {
                            return err(format!(
                                "matchLabels must be an object, got {}",
                                type_name(other)
                            ));
                        }
                    };
                    for (k, v) in labels {
                        let Value::String(v) = v else {
                            return err(format!(
                                "matchLabels[{k:?}] must be a string, got {}",
                                type_name(v)
                            ));
                        };
                        requirements.push(Requirement::new(
                            k.clone(),
                            Operator::Equals,
                            BTreeSet::from([v.clone()]),
                        )?);
                    }
                }
                "matchExpressions" => {
                    let exprs = match value {
                        Value::Null => continue,
                        Value::Array(a) => a,
                        other => {
                            return err(format!(
                                "matchExpressions must be an array, got {}",
                                type_name(other)
                            ));
                        }
                    };
                    for (i, expr) in exprs.iter().enumerate() {
                        requirements.push(expression(i, expr)?);
                    }
                }
                other => {
                    return err(format!(
                        "unknown field {other:?} in label selector (expected matchLabels, matchExpressions)"
                    ));
                }
            }
        }
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Self {
            requirements,
            nothing: false,
        })
    }

    /// Converts a plain label map (`{"app": "podinfo"}`, as in a Service's `spec.selector`) into
    /// an equality selector. `null` or `{}` gives a selector that matches everything: whether an
    /// empty Service selector selects anything is the caller's decision.
    pub fn from_map(labels: &Value) -> Result<Self, SelectorError> {
        match labels {
            Value::Null => Ok(Self::default()),
            Value::Object(_) => Self::from_api(&serde_json::json!({ "matchLabels": labels })),
            other => err(format!(
                "label map must be an object, got {}",
                type_name(other)
            )),
        }
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        !self.nothing && self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Matches against `metadata.labels` of an object (missing labels = empty map).
    pub fn matches_object(&self, obj: &Value) -> bool {
        self.matches(&labels_of(obj))
    }

    /// True when the selector matches every object.
    pub fn is_everything(&self) -> bool {
        !self.nothing && self.requirements.is_empty()
    }

    /// True for the selector of a `null` API `LabelSelector`.
    pub fn is_nothing(&self) -> bool {
        self.nothing
    }

    /// The requirements, sorted by key (all must hold).
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }
}

/// The canonical string form, as upstream prints it (e.g. for a scale subresource's
/// `status.selector`): requirements sorted by key and joined by `,`. The nothing-selector prints
/// as the empty string, like upstream's.
impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// The `metadata.labels` of an object as a map; non-string values are ignored.
pub fn labels_of(obj: &Value) -> BTreeMap<String, String> {
    obj.pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

fn expression(i: usize, expr: &Value) -> Result<Requirement, SelectorError> {
    let Some(obj) = expr.as_object() else {
        return err(format!("matchExpressions[{i}] must be an object"));
    };
    let Some(key) = obj.get("key").and_then(Value::as_str) else {
        return err(format!("matchExpressions[{i}].key: Required value"));
    };
    let Some(op) = obj.get("operator").and_then(Value::as_str) else {
        return err(format!("matchExpressions[{i}].operator: Required value"));
    };
    let operator = match op {
        "In" => Operator::In,
        "NotIn" => Operator::NotIn,
        "Exists" => Operator::Exists,
        "DoesNotExist" => Operator::DoesNotExist,
        other => {
            return err(format!(
                "matchExpressions[{i}].operator: {other:?} is not a valid label selector operator (In, NotIn, Exists, DoesNotExist)"
            ));
        }
    };
    let mut values = BTreeSet::new();
    match obj.get("values") {
        None | Some(Value::Null) => {}
        Some(Value::Array(vs)) => {
            for (j, v) in vs.iter().enumerate() {
                let Some(v) = v.as_str() else {
                    return err(format!(
                        "matchExpressions[{i}].values[{j}] must be a string"
                    ));
                };
                values.insert(v.to_string());
            }
        }
        Some(_) => {
            return err(format!(
                "matchExpressions[{i}].values must be an array of strings"
            ));
        }
    }
    Requirement::new(key.to_string(), operator, values)
        .map_err(|e| SelectorError(format!("matchExpressions[{i}]: {e}")))
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

// ---- label selector lexer and parser ----

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Eq,
    DoubleEq,
    NotEq,
    Not,
    Gt,
    Lt,
    Comma,
    Open,
    Close,
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::Ident(s) => f.write_str(s),
            Token::Eq => f.write_str("="),
            Token::DoubleEq => f.write_str("=="),
            Token::NotEq => f.write_str("!="),
            Token::Not => f.write_str("!"),
            Token::Gt => f.write_str(">"),
            Token::Lt => f.write_str("<"),
            Token::Comma => f.write_str(","),
            Token::Open => f.write_str("("),
            Token::Close => f.write_str(")"),
        }
    }
}

fn is_special(c: char) -> bool {
    matches!(c, '=' | '!' | '(' | ')' | ',' | '<' | '>')
}

fn lex_labels(s: &str) -> Result<Vec<Token>, SelectorError> {
    let mut tokens = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        if is_special(c) {
            chars.next();
            let next_is_eq = chars.peek() == Some(&'=');
            let token = match c {
                '=' if next_is_eq => {
                    chars.next();
                    Token::DoubleEq
                }
                '=' => Token::Eq,
                '!' if next_is_eq => {
                    chars.next();
                    Token::NotEq
                }
                '!' => Token::Not,
                '(' => Token::Open,
                ')' => Token::Close,
                ',' => Token::Comma,
                '<' => Token::Lt,
                _ => Token::Gt,
            };
            tokens.push(token);
            continue;
        }
        let mut ident = String::new();
        while let Some(&c) = chars.peek() {
            if c.is_whitespace() || is_special(c) {
                break;
            }
            ident.push(c);
            chars.next();
        }
        tokens.push(Token::Ident(ident));
    }
    Ok(tokens)
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn requirement(&mut self) -> Result<Requirement, SelectorError> {
        let negated = if self.peek() == Some(&Token::Not) {
            self.pos += 1;
            true
        } else {
            false
        };
        let key = match self.next() {
            Some(Token::Ident(k)) => k,
            other => {
                return err(format!(
                    "unable to parse requirement: found '{}', expected: identifier",
                    other.map(|t| t.to_string()).unwrap_or_default()
                ));
            }
        };
        if negated {
            return Requirement::new(key, Operator::DoesNotExist, BTreeSet::new())
                .map_err(parse_context);
        }
        let operator = match self.peek() {
            None | Some(Token::Comma) => {
                return Requirement::new(key, Operator::Exists, BTreeSet::new())
                    .map_err(parse_context);
            }
            Some(Token::Eq) => Operator::Equals,
            Some(Token::DoubleEq) => Operator::DoubleEquals,
            Some(Token::NotEq) => Operator::NotEquals,
            Some(Token::Gt) => Operator::GreaterThan,
            Some(Token::Lt) => Operator::LessThan,
            Some(Token::Ident(w)) if w == "in" => Operator::In,
            Some(Token::Ident(w)) if w == "notin" => Operator::NotIn,
            Some(other) => {
                return err(format!(
                    "unable to parse requirement: found '{other}', expected: '=', '!=', '==', 'in', 'notin'"
                ));
            }
        };
        self.pos += 1;
        let values = if matches!(operator, Operator::In | Operator::NotIn) {
            self.value_list()?
        } else {
            self.exact_value()?
        };
        Requirement::new(key, operator, values).map_err(parse_context)
    }

    fn exact_value(&mut self) -> Result<BTreeSet<String>, SelectorError> {
        match self.peek() {
            // `key=` selects the empty value, as upstream.
            None | Some(Token::Comma) => Ok(BTreeSet::from([String::new()])),
            Some(Token::Ident(v)) => {
                let v = v.clone();
                self.pos += 1;
                Ok(BTreeSet::from([v]))
            }
            Some(other) => err(format!(
                "unable to parse requirement: found '{other}', expected: identifier"
            )),
        }
    }

    fn value_list(&mut self) -> Result<BTreeSet<String>, SelectorError> {
        match self.next() {
            Some(Token::Open) => {}
            other => {
                return err(format!(
                    "unable to parse requirement: found '{}', expected: '('",
                    other.map(|t| t.to_string()).unwrap_or_default()
                ));
            }
        }
        let mut values = BTreeSet::new();
        // A value slot may be empty (`(a,)` holds "a" and ""), as upstream accepts.
        let mut expect_value = true;
        loop {
            match self.next() {
                Some(Token::Ident(v)) if expect_value => {
                    values.insert(v);
                    expect_value = false;
                }
                Some(Token::Comma) => {
                    if expect_value {
                        values.insert(String::new());
                    }
                    expect_value = true;
                }
                Some(Token::Close) => {
                    if expect_value && !values.is_empty() {
                        values.insert(String::new());
                    }
                    return Ok(values);
                }
                other => {
                    return err(format!(
                        "unable to parse requirement: found '{}', expected: ',', ')' or identifier",
                        other.map(|t| t.to_string()).unwrap_or_default()
                    ));
                }
            }
        }
    }
}

fn parse_context(e: SelectorError) -> SelectorError {
    SelectorError(format!("unable to parse requirement: {}", e.0))
}

// ---- validation of label keys and values ----

const NAME_FMT_MSG: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";

fn is_qualified_name_part(s: &str) -> bool {
    let bytes = s.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(f), Some(l)) => {
            f.is_ascii_alphanumeric()
                && l.is_ascii_alphanumeric()
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            let b = label.as_bytes();
            match (b.first(), b.last()) {
                (Some(f), Some(l)) => {
                    (f.is_ascii_lowercase() || f.is_ascii_digit())
                        && (l.is_ascii_lowercase() || l.is_ascii_digit())
                        && b.iter()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
                }
                _ => false,
            }
        })
}

/// Validates a label key: `[prefix/]name`, name at most 63 characters of `[A-Za-z0-9_.-]` that
/// starts and ends alphanumeric, prefix a DNS-1123 subdomain.
pub fn validate_label_key(key: &str) -> Result<(), SelectorError> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if name.contains('/') {
        return err(format!(
            "invalid label key {key:?}: a qualified name has at most one '/' (an optional DNS subdomain prefix and a name)"
        ));
    }
    if let Some(prefix) = prefix {
        if prefix.is_empty() {
            return err(format!(
                "invalid label key {key:?}: prefix part must be non-empty"
            ));
        }
        if !is_dns1123_subdomain(prefix) {
            return err(format!(
                "invalid label key {key:?}: prefix part must be a lowercase RFC 1123 subdomain of at most 253 characters (e.g. 'example.com')"
            ));
        }
    }
    if name.is_empty() {
        return err(format!(
            "invalid label key {key:?}: name part must be non-empty"
        ));
    }
    if name.len() > 63 {
        return err(format!(
            "invalid label key {key:?}: name part must be no more than 63 characters"
        ));
    }
    if !is_qualified_name_part(name) {
        return err(format!(
            "invalid label key {key:?}: name part {NAME_FMT_MSG}"
        ));
    }
    Ok(())
}

/// Validates a label value: empty, or at most 63 characters of `[A-Za-z0-9_.-]` starting and
/// ending alphanumeric.
pub fn validate_label_value(key: &str, value: &str) -> Result<(), SelectorError> {
    if value.len() > 63 {
        return err(format!(
            "invalid label value {value:?} for key {key:?}: must be no more than 63 characters"
        ));
    }
    if !value.is_empty() && !is_qualified_name_part(value) {
        return err(format!(
            "invalid label value {value:?} for key {key:?}: a valid label value must be an empty string or {NAME_FMT_MSG}"
        ));
    }
    Ok(())
}

// ---- field selectors ----

/// One term of a field selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRequirement {
    /// Dotted path, e.g. `involvedObject.name`.
    pub field: String,
    /// `true` for `!=`.
    pub negated: bool,
    pub value: String,
}

/// A parsed field selector (`metadata.name=x,metadata.namespace!=y,involvedObject.kind=Canary`):
/// `=`, `==`, `!=` on any dotted path; a missing field compares as "".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    requirements: Vec<FieldRequirement>,
}

impl FieldSelector {
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        for term in split_unescaped(s, ',') {
            if term.trim().is_empty() {
                continue;
            }
            let Some((lhs, op, rhs)) = split_term(&term) else {
                return err(format!(
                    "invalid selector: '{s}'; can't understand '{term}'"
                ));
            };
            let field = lhs.trim().to_string();
            if field.is_empty() {
                return err(format!(
                    "invalid selector: '{s}'; field name missing in '{term}'"
                ));
            }
            let value = unescape_field_value(rhs.trim())
                .map_err(|e| SelectorError(format!("invalid field selector {s:?}: {e}")))?;
            requirements.push(FieldRequirement {
                field,
                negated: op == "!=",
                value,
            });
        }
        Ok(Self { requirements })
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.requirements.iter().all(|r| {
            let actual = field_value(obj, &r.field);
            (actual == r.value) != r.negated
        })
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    pub fn requirements(&self) -> &[FieldRequirement] {
        &self.requirements
    }

    /// The value a `field=value` (or `==`) term requires, if any: lets a store narrow a list to
    /// one name or namespace before matching.
    pub fn required_value(&self, field: &str) -> Option<&str> {
        self.requirements
            .iter()
            .find(|r| !r.negated && r.field == field)
            .map(|r| r.value.as_str())
    }
}

/// The value at a dotted path rendered as a string: missing and `null` give "", strings as-is,
/// everything else as JSON text.
pub fn field_value(obj: &Value, path: &str) -> String {
    let mut cur = obj;
    for part in path.split('.') {
        match cur.get(part) {
            Some(v) => cur = v,
            None => return String::new(),
        }
    }
    match cur {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Splits on `sep` where it is not escaped by a backslash (escapes are kept for unescaping).
fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            cur.push(c);
            escaped = false;
        } else if c == '\\' {
            cur.push(c);
            escaped = true;
        } else if c == sep {
            parts.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    parts.push(cur);
    parts
}

/// Splits `lhs op rhs` at the first unescaped operator, trying `!=`, `==`, `=` at each position
/// as upstream does.
fn split_term(term: &str) -> Option<(&str, &'static str, &str)> {
    let mut escaped = false;
    for (i, c) in term.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        if c == '\\' {
            escaped = true;
            continue;
        }
        let rest = &term[i..];
        for op in ["!=", "==", "="] {
            if rest.starts_with(op) {
                return Some((&term[..i], op, &term[i + op.len()..]));
            }
        }
    }
    None
}

fn unescape_field_value(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(e @ ('\\' | ',' | '=')) => out.push(e),
                Some(e) => return Err(format!("invalid escape sequence '\\{e}'")),
                None => return Err("trailing backslash".to_string()),
            }
        } else if c == ',' || c == '=' {
            return Err(format!("unescaped '{c}' in value {s:?}"));
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn label_selector_table() {
        let app_web = labels(&[("app", "web"), ("tier", "front"), ("rev", "3")]);
        let app_api = labels(&[("app", "api")]);
        let none = labels(&[]);
        // (selector, matches app_web, matches app_api, matches none)
        let cases: &[(&str, bool, bool, bool)] = &[
            ("", true, true, true),
            ("   ", true, true, true),
            ("app=web", true, false, false),
            ("app==web", true, false, false),
            ("app = web", true, false, false),
            ("app!=web", false, true, true),
            ("app in (web,api)", true, true, false),
            ("app in(web)", true, false, false),
            ("app in ( web , db )", true, false, false),
            ("app notin (web)", false, true, true),
            ("tier", true, false, false),
            ("!tier", false, true, true),
            ("! tier", false, true, true),
            ("app=web,tier=front", true, false, false),
            ("app=web,tier=back", false, false, false),
            ("app , !tier", false, true, false),
            ("rev>2", true, false, false),
            ("rev<3", false, false, false),
            ("rev>10", false, false, false),
            ("example.com/app", false, false, false),
            ("app=", false, false, false),
            ("app in (web,)", true, false, false),
        ];
        for (sel, web, api, empty) in cases {
            let s = LabelSelector::parse(sel).unwrap_or_else(|e| panic!("{sel}: {e}"));
            assert_eq!(s.matches(&app_web), *web, "{sel} vs app_web");
            assert_eq!(s.matches(&app_api), *api, "{sel} vs app_api");
            assert_eq!(s.matches(&none), *empty, "{sel} vs no labels");
        }
    }

    #[test]
    fn empty_value_selects_empty_label() {
        let s = LabelSelector::parse("app=").unwrap();
        assert!(s.matches(&labels(&[("app", "")])));
        assert!(!s.matches(&labels(&[("app", "x")])));
    }

    #[test]
    fn label_selector_errors_name_the_problem() {
        let cases: &[(&str, &str)] = &[
            ("app=web,", "expected: identifier"),
            ("app web", "found 'web'"),
            ("app in web", "expected: '('"),
            ("app in ()", "values set can't be empty"),
            ("app in (a", "expected: ',', ')'"),
            ("=web", "expected: identifier"),
            ("-app=web", "invalid label key \"-app\""),
            ("a/b/c=x", "at most one '/'"),
            ("/app=x", "prefix part must be non-empty"),
            ("Example.com/app=x", "prefix part"),
            ("app=we b", "found 'b'"),
            ("app=-web", "invalid label value \"-web\""),
            ("rev>x", "must be an integer"),
            ("app===x", "found '=', expected: identifier"),
            ("app=(x)", "expected: identifier"),
        ];
        for (sel, want) in cases {
            let e = LabelSelector::parse(sel).expect_err(sel).0;
            assert!(e.contains(want), "{sel}: {e:?} should contain {want:?}");
        }
        let long = format!("app={}", "a".repeat(64));
        assert!(LabelSelector::parse(&long).unwrap_err().0.contains("63"));
        let long_key = format!("{}=x", "k".repeat(64));
        assert!(
            LabelSelector::parse(&long_key)
                .unwrap_err()
                .0
                .contains("63")
        );
    }

    #[test]
    fn canonical_string_sorted_by_key() {
        let s = LabelSelector::parse("z in (b,a), a!=x, !m, k, n==1").unwrap();
        assert_eq!(s.to_string(), "a!=x,k,!m,n==1,z in (a,b)");
        let round = LabelSelector::parse(&s.to_string()).unwrap();
        assert_eq!(round, s);
    }

    #[test]
    fn from_api_table() {
        let web = json!({"metadata": {"labels": {"app": "web", "tier": "front"}}});
        let bare = json!({"metadata": {"name": "x"}});
        // (selector, matches web, matches bare)
        let cases = [
            (json!({}), true, true),
            (json!(null), false, false),
            (json!({"matchLabels": {"app": "web"}}), true, false),
            (json!({"matchLabels": {"app": "api"}}), false, false),
            (
                json!({"matchExpressions": [{"key": "app", "operator": "In", "values": ["web", "x"]}]}),
                true,
                false,
            ),
            (
                json!({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["web"]}]}),
                false,
                true,
            ),
            (
                json!({"matchExpressions": [{"key": "tier", "operator": "Exists"}]}),
                true,
                false,
            ),
            (
                json!({"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}),
                false,
                true,
            ),
            (
                json!({"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}),
                false,
                false,
            ),
        ];
        for (sel, w, b) in cases {
            let s = LabelSelector::from_api(&sel).unwrap();
            assert_eq!(s.matches_object(&web), w, "{sel} vs web");
            assert_eq!(s.matches_object(&bare), b, "{sel} vs bare");
        }
        let s = LabelSelector::from_api(&json!({"matchLabels": {"b": "2", "a": "1"}})).unwrap();
        assert_eq!(s.to_string(), "a=1,b=2");
    }

    #[test]
    fn from_api_errors() {
        let cases = [
            (json!("app=web"), "must be an object"),
            (json!({"app": "web"}), "unknown field \"app\""),
            (json!({"matchLabels": {"app": 1}}), "must be a string"),
            (
                json!({"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]}),
                "not a valid label selector operator",
            ),
            (
                json!({"matchExpressions": [{"key": "a", "operator": "In", "values": []}]}),
                "can't be empty",
            ),
            (
                json!({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}),
                "must be empty",
            ),
            (
                json!({"matchExpressions": [{"operator": "Exists"}]}),
                "key: Required value",
            ),
            (
                json!({"matchLabels": {"bad key": "x"}}),
                "invalid label key",
            ),
        ];
        for (sel, want) in cases {
            let e = LabelSelector::from_api(&sel).expect_err(&sel.to_string()).0;
            assert!(e.contains(want), "{sel}: {e:?} should contain {want:?}");
        }
    }

    #[test]
    fn from_map_is_equality() {
        let s = LabelSelector::from_map(&json!({"app": "web"})).unwrap();
        assert!(s.matches_object(&json!({"metadata": {"labels": {"app": "web", "x": "y"}}})));
        assert!(!s.matches_object(&json!({"metadata": {}})));
        assert!(
            LabelSelector::from_map(&json!(null))
                .unwrap()
                .is_everything()
        );
        assert!(LabelSelector::from_api(&json!(null)).unwrap().is_nothing());
    }

    #[test]
    fn field_selector_table() {
        let event = json!({
            "metadata": {"name": "e1", "namespace": "test"},
            "involvedObject": {"kind": "Canary", "name": "podinfo", "namespace": "test", "uid": "u-1"},
            "count": 3,
            "status": {"phase": "Running"},
        });
        let cases: &[(&str, bool)] = &[
            ("", true),
            ("metadata.name=e1", true),
            ("metadata.name==e1", true),
            ("metadata.name!=e1", false),
            ("metadata.namespace=test,involvedObject.kind=Canary", true),
            (
                "involvedObject.kind=Canary,involvedObject.name=other",
                false,
            ),
            ("involvedObject.uid=u-1", true),
            ("status.phase=Running", true),
            ("status.phase!=Pending", true),
            ("spec.nodeName=", true),
            ("spec.nodeName!=", false),
            ("count=3", true),
            (" metadata.name = e1 ", true),
            ("metadata.name=e1,,", true),
        ];
        for (sel, want) in cases {
            let s = FieldSelector::parse(sel).unwrap_or_else(|e| panic!("{sel}: {e}"));
            assert_eq!(s.matches(&event), *want, "{sel}");
        }
        let s = FieldSelector::parse("metadata.name=a\\,b").unwrap();
        assert!(s.matches(&json!({"metadata": {"name": "a,b"}})));
        assert_eq!(s.required_value("metadata.name"), Some("a,b"));
    }

    #[test]
    fn field_selector_errors() {
        for (sel, want) in [
            ("metadata.name", "can't understand 'metadata.name'"),
            ("=x", "field name missing"),
            ("metadata.name=a\\x", "invalid escape"),
            ("metadata.name=a=b", "unescaped '='"),
        ] {
            let e = FieldSelector::parse(sel).expect_err(sel).0;
            assert!(e.contains(want), "{sel}: {e:?} should contain {want:?}");
        }
    }

    proptest! {
        #[test]
        fn random_label_selectors_never_panic(s in "[ a-z0-9=!(),<>/._-]{0,40}") {
            if let Ok(sel) = LabelSelector::parse(&s) {
                // Whatever parses prints to a form that parses to the same selector.
                let again = LabelSelector::parse(&sel.to_string());
                prop_assert_eq!(again.ok(), Some(sel.clone()));
                let _ = sel.matches(&labels(&[("a", "b")]));
            }
        }

        #[test]
        fn arbitrary_unicode_selectors_never_panic(s in "\\PC{0,30}") {
            let _ = LabelSelector::parse(&s);
            let _ = FieldSelector::parse(&s).map(|f| f.matches(&json!({"a": {"b": 1}})));
        }
    }
}
