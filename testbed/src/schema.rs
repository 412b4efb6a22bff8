//! Structural OpenAPI v3 schemas of CRDs (`spec.versions[].schema.openAPIV3Schema`): pruning,
//! defaulting and validation as the apiextensions API server does them, in that order.
//!
//! - [`Schema::prune`] drops fields the schema does not declare and returns their paths
//!   (`spec.foo`, `spec.list[0].bar`) for `fieldValidation=Strict|Warn` (`unknown field "spec.foo"`).
//!   At the root and inside `x-kubernetes-embedded-resource` objects `apiVersion`, `kind` and
//!   `metadata` are kept untouched (ObjectMeta is the caller's business). Under
//!   `x-kubernetes-preserve-unknown-fields: true` unknown fields stay, declared ones are still
//!   pruned inside. A map's values are pruned with its `additionalProperties` schema. Where the
//!   schema has no node at all for an object (an array without `items`, `additionalProperties:
//!   true`) the object's fields are dropped, as upstream.
//! - [`Schema::apply_defaults`]: a missing property (or a `null` one that is not `nullable`) of a
//!   present object gets a deep copy of its `default`, recursively (defaults inside defaults,
//!   inside array items and map values). Then, like upstream, `null` values of non-nullable
//!   properties without a default are removed.
//! - [`Schema::validate`]: `type` (`integer` accepts only whole numbers, `number` any number),
//!   `nullable`, `x-kubernetes-int-or-string`, `enum`, `required`, `minimum`/`maximum` (and their
//!   `exclusive*` flags), `multipleOf`, `minLength`/`maxLength` (in characters),
//!   `minItems`/`maxItems`, `minProperties`/`maxProperties`, `uniqueItems`,
//!   `x-kubernetes-list-type: set|map` duplicates, `pattern` (unanchored, like Go's RE2), `format`
//!   (`date-time`, `date`, `uuid`, `ipv4`, `ipv6`, `cidr`, `byte`; others are not checked),
//!   `allOf`/`anyOf`/`oneOf`/`not`. Errors carry the API server's reasons, field paths and
//!   message texts, e.g. `Invalid value: 150: spec.analysis.maxWeight in body should be less than
//!   or equal to 100`. Not supported: CEL `x-kubernetes-validations`, numeric formats (`int32`
//!   range), the less common string formats.
use regex::Regex;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fmt;

/// One validation failure, as it goes into a 422 `Status.details.causes[]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    /// `FieldValueRequired`, `FieldValueInvalid`, `FieldValueNotSupported`, `FieldValueTypeInvalid`, `FieldValueDuplicate`.
    pub reason: String,
    /// Dotted path as the API server prints it, e.g. `spec.analysis.maxWeight`.
    pub field: String,
    pub message: String,
}

/// `field: message`, the form the API server joins into a 422 `Status.message`
/// (`Canary.flagger.app "x" is invalid: [spec.a: Required value, ...]`).
impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

/// The `Status.message` of a 422 Invalid answer, as the API server words it:
/// `Canary.flagger.app "podinfo" is invalid: spec.targetRef: Required value` (several errors are
/// joined as `[a, b]`; identical ones once). `kind` is e.g. `Canary`, `group` `flagger.app` (empty
/// for the core group).
pub fn invalid_message(kind: &str, group: &str, name: &str, errors: &[FieldError]) -> String {
    let qualified = if group.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}.{group}")
    };
    let mut parts: Vec<String> = Vec::new();
    for e in errors {
        let text = e.to_string();
        if !parts.contains(&text) {
            parts.push(text);
        }
    }
    let joined = match parts.len() {
        1 => parts.remove(0),
        _ => format!("[{}]", parts.join(", ")),
    };
    format!("{qualified} {name:?} is invalid: {joined}")
}

/// The texts the API server uses for pruned fields: the 400 message under
/// `fieldValidation=Strict` is `strict decoding error: ` followed by these joined with `, `, and
/// under `Warn` each one is a `Warning` header.
pub fn unknown_field_warnings(dropped: &[String]) -> Vec<String> {
    dropped
        .iter()
        .map(|p| format!("unknown field {p:?}"))
        .collect()
}

/// A CRD version's `openAPIV3Schema`, ready to prune, default and validate objects.
#[derive(Debug, Clone)]
pub struct Schema {
    root: Node,
}

#[derive(Debug, Clone, Default)]
enum Additional {
    /// Not specified: unknown fields are pruned.
    #[default]
    Unspecified,
    /// `additionalProperties: true|false`.
    Allowed(bool),
    Schema(Box<Node>),
}

#[derive(Debug, Clone, Default)]
struct Node {
    type_: Option<String>,
    nullable: bool,
    properties: BTreeMap<String, Node>,
    additional: Additional,
    items: Option<Box<Node>>,
    preserve_unknown: bool,
    embedded: bool,
    int_or_string: bool,
    default: Option<Value>,
    enum_: Option<Vec<Value>>,
    required: Vec<String>,
    maximum: Option<f64>,
    exclusive_maximum: bool,
    minimum: Option<f64>,
    exclusive_minimum: bool,
    multiple_of: Option<f64>,
    max_length: Option<u64>,
    min_length: Option<u64>,
    max_items: Option<u64>,
    min_items: Option<u64>,
    max_properties: Option<u64>,
    min_properties: Option<u64>,
    unique_items: bool,
    list_type: Option<String>,
    list_map_keys: Vec<String>,
    pattern: Option<(String, Regex)>,
    format: Option<String>,
    all_of: Vec<Node>,
    any_of: Vec<Node>,
    one_of: Vec<Node>,
    not: Option<Box<Node>>,
}

impl Schema {
    pub fn new(open_api_v3_schema: &Value) -> Result<Self, String> {
        Ok(Self {
            root: Node::parse(open_api_v3_schema, "openAPIV3Schema")?,
        })
    }

    /// Drops fields the schema does not declare (except under `x-kubernetes-preserve-unknown-fields`);
    /// never touches `apiVersion`, `kind`, `metadata` at the root. Returns the dotted paths dropped
    /// (for fieldValidation=Strict/Warn).
    pub fn prune(&self, obj: &mut Value) -> Vec<String> {
        let mut dropped = Vec::new();
        prune(obj, Some(&self.root), true, "", &mut dropped);
        dropped
    }

    /// Applies `default`s, as the API server does after pruning.
    pub fn apply_defaults(&self, obj: &mut Value) {
        default(obj, &self.root);
        prune_nulls(obj, &self.root);
    }

    pub fn validate(&self, obj: &Value) -> Vec<FieldError> {
        let mut errors = Vec::new();
        validate(obj, &self.root, "", &mut errors);
        errors
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------------

impl Node {
    fn parse(v: &Value, at: &str) -> Result<Node, String> {
        let Some(m) = v.as_object() else {
            return Err(format!("{at}: a schema must be an object"));
        };
        let mut n = Node::default();
        let string = |k: &str| -> Result<Option<String>, String> {
            match m.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(format!("{at}.{k}: must be a string")),
            }
        };
        let boolean = |k: &str| -> Result<bool, String> {
            match m.get(k) {
                None | Some(Value::Null) => Ok(false),
                Some(Value::Bool(b)) => Ok(*b),
                Some(_) => Err(format!("{at}.{k}: must be a boolean")),
            }
        };
        let number = |k: &str| -> Result<Option<f64>, String> {
            match m.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Number(x)) => Ok(x.as_f64()),
                Some(_) => Err(format!("{at}.{k}: must be a number")),
            }
        };
        let count = |k: &str| -> Result<Option<u64>, String> {
            match m.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Number(x)) => x
                    .as_u64()
                    .map(Some)
                    .ok_or_else(|| format!("{at}.{k}: must be a non-negative integer")),
                Some(_) => Err(format!("{at}.{k}: must be a non-negative integer")),
            }
        };
        let sub_list = |k: &str| -> Result<Vec<Node>, String> {
            match m.get(k) {
                None | Some(Value::Null) => Ok(Vec::new()),
                Some(Value::Array(a)) => a
                    .iter()
                    .enumerate()
                    .map(|(i, s)| Node::parse(s, &format!("{at}.{k}[{i}]")))
                    .collect(),
                Some(_) => Err(format!("{at}.{k}: must be a list of schemas")),
            }
        };

        n.type_ = string("type")?;
        if let Some(t) = &n.type_
            && !matches!(
                t.as_str(),
                "object" | "array" | "string" | "integer" | "number" | "boolean"
            )
        {
            return Err(format!("{at}.type: Unsupported value: {t:?}"));
        }
        n.nullable = boolean("nullable")?;
        n.preserve_unknown = boolean("x-kubernetes-preserve-unknown-fields")?;
        n.embedded = boolean("x-kubernetes-embedded-resource")?;
        n.int_or_string = boolean("x-kubernetes-int-or-string")?;
        n.default = m.get("default").cloned();
        n.enum_ = match m.get("enum") {
            None | Some(Value::Null) => None,
            Some(Value::Array(a)) => Some(a.clone()),
            Some(_) => return Err(format!("{at}.enum: must be a list")),
        };
        n.required = match m.get("required") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| {
                    x.as_str()
                        .map(String::from)
                        .ok_or_else(|| format!("{at}.required: must be a list of strings"))
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(format!("{at}.required: must be a list of strings")),
        };
        n.maximum = number("maximum")?;
        n.minimum = number("minimum")?;
        n.exclusive_maximum = boolean("exclusiveMaximum")?;
        n.exclusive_minimum = boolean("exclusiveMinimum")?;
        n.multiple_of = number("multipleOf")?;
        n.max_length = count("maxLength")?;
        n.min_length = count("minLength")?;
        n.max_items = count("maxItems")?;
        n.min_items = count("minItems")?;
        n.max_properties = count("maxProperties")?;
        n.min_properties = count("minProperties")?;
        n.unique_items = boolean("uniqueItems")?;
        n.list_type = string("x-kubernetes-list-type")?;
        n.list_map_keys = match m.get("x-kubernetes-list-map-keys") {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect(),
            _ => Vec::new(),
        };
        if let Some(p) = string("pattern")? {
            let re = Regex::new(&p)
                .map_err(|e| format!("{at}.pattern: invalid regular expression {p:?}: {e}"))?;
            n.pattern = Some((p, re));
        }
        n.format = string("format")?;
        if let Some(props) = m.get("properties") {
            let Some(props) = props.as_object() else {
                return Err(format!("{at}.properties: must be an object"));
            };
            for (k, s) in props {
                n.properties
                    .insert(k.clone(), Node::parse(s, &format!("{at}.properties[{k}]"))?);
            }
        }
        n.additional = match m.get("additionalProperties") {
            None | Some(Value::Null) => Additional::Unspecified,
            Some(Value::Bool(b)) => Additional::Allowed(*b),
            Some(s) => Additional::Schema(Box::new(Node::parse(
                s,
                &format!("{at}.additionalProperties"),
            )?)),
        };
        n.items = match m.get("items") {
            None | Some(Value::Null) => None,
            Some(s) => Some(Box::new(Node::parse(s, &format!("{at}.items"))?)),
        };
        n.all_of = sub_list("allOf")?;
        n.any_of = sub_list("anyOf")?;
        n.one_of = sub_list("oneOf")?;
        n.not = match m.get("not") {
            None | Some(Value::Null) => None,
            Some(s) => Some(Box::new(Node::parse(s, &format!("{at}.not"))?)),
        };
        Ok(n)
    }

    /// The schema for a map value that is not a declared property, if any.
    fn additional_schema(&self) -> Option<&Node> {
        match &self.additional {
            Additional::Schema(s) => Some(s),
            _ => None,
        }
    }
}

fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

// ---------------------------------------------------------------------------------------------
// Pruning
// ---------------------------------------------------------------------------------------------

const META_FIELDS: [&str; 3] = ["apiVersion", "kind", "metadata"];

fn prune(x: &mut Value, s: Option<&Node>, is_root: bool, path: &str, dropped: &mut Vec<String>) {
    let embedded = is_root || s.is_some_and(|s| s.embedded);
    if let Some(s) = s.filter(|s| s.preserve_unknown) {
        skip_prune(x, s, embedded, path, dropped);
        return;
    }
    match x {
        Value::Object(m) => {
            let mut remove = Vec::new();
            for (k, v) in m.iter_mut() {
                if embedded && META_FIELDS.contains(&k.as_str()) {
                    continue;
                }
                let Some(s) = s else {
                    remove.push(k.clone());
                    continue;
                };
                if let Some(prop) = s.properties.get(k) {
                    prune(v, Some(prop), false, &child(path, k), dropped);
                } else if !matches!(
                    s.additional,
                    Additional::Unspecified | Additional::Allowed(false)
                ) {
                    prune(v, s.additional_schema(), false, &child(path, k), dropped);
                } else {
                    remove.push(k.clone());
                }
            }
            for k in remove {
                m.remove(&k);
                dropped.push(child(path, &k));
            }
        }
        Value::Array(a) => {
            let items = s.and_then(|s| s.items.as_deref());
            for (i, v) in a.iter_mut().enumerate() {
                prune(v, items, false, &index(path, i), dropped);
            }
        }
        _ => {}
    }
}

/// Inside `x-kubernetes-preserve-unknown-fields`: unknown fields stay, declared ones are pruned.
fn skip_prune(x: &mut Value, s: &Node, embedded: bool, path: &str, dropped: &mut Vec<String>) {
    match x {
        Value::Object(m) => {
            for (k, v) in m.iter_mut() {
                if embedded && META_FIELDS.contains(&k.as_str()) {
                    continue;
                }
                if let Some(prop) = s.properties.get(k) {
                    prune(v, Some(prop), false, &child(path, k), dropped);
                } else if let Some(add) = s.additional_schema() {
                    prune(v, Some(add), false, &child(path, k), dropped);
                }
            }
        }
        Value::Array(a) => {
            if let Some(items) = s.items.as_deref() {
                for (i, v) in a.iter_mut().enumerate() {
                    skip_prune(v, items, items.embedded, &index(path, i), dropped);
                }
            }
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Defaulting
// ---------------------------------------------------------------------------------------------

fn is_non_nullable_null(v: &Value, s: &Node) -> bool {
    v.is_null() && !s.nullable
}

fn default(x: &mut Value, s: &Node) {
    match x {
        Value::Object(m) => {
            for (k, prop) in &s.properties {
                let Some(d) = &prop.default else { continue };
                if m.get(k).is_none_or(|v| is_non_nullable_null(v, prop)) {
                    m.insert(k.clone(), d.clone());
                }
            }
            for (k, v) in m.iter_mut() {
                if let Some(prop) = s.properties.get(k) {
                    default(v, prop);
                } else if let Some(add) = s.additional_schema() {
                    if let Some(d) = add
                        .default
                        .as_ref()
                        .filter(|_| is_non_nullable_null(v, add))
                    {
                        *v = d.clone();
                    }
                    default(v, add);
                }
            }
        }
        Value::Array(a) => {
            if let Some(items) = s.items.as_deref() {
                for v in a.iter_mut() {
                    if let Some(d) = items
                        .default
                        .as_ref()
                        .filter(|_| is_non_nullable_null(v, items))
                    {
                        *v = d.clone();
                    }
                    default(v, items);
                }
            }
        }
        _ => {}
    }
}

/// Upstream's `PruneNonNullableNullsWithoutDefaults`.
fn prune_nulls(x: &mut Value, s: &Node) {
    match x {
        Value::Object(m) => {
            m.retain(|k, v| {
                let schema = s.properties.get(k).or(s.additional_schema());
                !schema.is_some_and(|p| v.is_null() && !p.nullable && p.default.is_none())
            });
            for (k, v) in m.iter_mut() {
                if let Some(p) = s.properties.get(k).or(s.additional_schema()) {
                    prune_nulls(v, p);
                }
            }
        }
        Value::Array(a) => {
            if let Some(items) = s.items.as_deref() {
                for v in a.iter_mut() {
                    prune_nulls(v, items);
                }
            }
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------------

const REQUIRED: &str = "FieldValueRequired";
const INVALID: &str = "FieldValueInvalid";
const NOT_SUPPORTED: &str = "FieldValueNotSupported";
const TYPE_INVALID: &str = "FieldValueTypeInvalid";
const TOO_LONG: &str = "FieldValueTooLong";
const TOO_MANY: &str = "FieldValueTooMany";
const DUPLICATE: &str = "FieldValueDuplicate";

fn push(errors: &mut Vec<FieldError>, reason: &str, field: &str, message: String) {
    errors.push(FieldError {
        reason: reason.to_string(),
        field: field.to_string(),
        message,
    });
}

/// `Invalid value: <v>: <detail>` with the value printed as the API server prints it.
fn invalid(errors: &mut Vec<FieldError>, reason: &str, field: &str, value: &Value, detail: String) {
    push(
        errors,
        reason,
        field,
        format!("Invalid value: {}: {detail}", show_value(value)),
    );
}

/// Go's `%q` for strings, `%v` for numbers and booleans; JSON for the rest.
fn show_value(v: &Value) -> String {
    match v {
        Value::String(s) => quote(s),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => i.to_string(),
            (_, Some(u), _) => u.to_string(),
            (_, _, Some(f)) => go_float(f),
            _ => n.to_string(),
        },
        Value::Null => "\"null\"".to_string(),
        other => other.to_string(),
    }
}

fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
}

/// Go's `%v` of a float64 (`strconv.FormatFloat(f, 'g', -1, 64)`): shortest digits, exponent
/// form when the decimal exponent is below -4 or at least 6 (`1e+06`).
pub(crate) fn go_float(f: f64) -> String {
    if f == 0.0 || !f.is_finite() {
        return format!("{f}");
    }
    let exp = f.abs().log10().floor() as i32;
    if !(-4..6).contains(&exp) {
        // Rust prints `1e6`/`1.5e-5`; Go prints `1e+06`/`1.5e-05`.
        let s = format!("{f:e}");
        if let Some((mant, e)) = s.split_once('e') {
            let (sign, digits) = match e.strip_prefix('-') {
                Some(d) => ('-', d),
                None => ('+', e),
            };
            return format!("{mant}e{sign}{digits:0>2}");
        }
        return s;
    }
    format!("{f}")
}

fn type_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if is_integer(n) => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn is_integer(n: &serde_json::Number) -> bool {
    n.is_i64()
        || n.is_u64()
        || n.as_f64()
            .is_some_and(|f| f.fract() == 0.0 && f.abs() < 9.007_199_254_740_992e15)
}

fn type_error(errors: &mut Vec<FieldError>, path: &str, want: &str, v: &Value) {
    let actual = type_of(v);
    push(
        errors,
        TYPE_INVALID,
        path,
        format!(
            "Invalid value: {}: {path} in body must be of type {want}: {}",
            quote(actual),
            quote(actual)
        ),
    );
}

/// Checks `type`, `nullable` and int-or-string. Returns false when the value must not be
/// checked further.
fn check_type(v: &Value, s: &Node, path: &str, errors: &mut Vec<FieldError>) -> bool {
    if v.is_null() {
        if s.nullable {
            return false;
        }
        if let Some(t) = &s.type_ {
            type_error(errors, path, t, v);
            return false;
        }
        if s.int_or_string {
            type_error(errors, path, "integer,string", v);
            return false;
        }
        return true;
    }
    if s.int_or_string {
        let ok = v.is_string() || v.as_number().is_some_and(is_integer);
        if !ok {
            type_error(errors, path, "integer,string", v);
        }
        return ok;
    }
    let Some(t) = &s.type_ else { return true };
    let ok = match t.as_str() {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "number" => v.is_number(),
        "integer" => v.as_number().is_some_and(is_integer),
        _ => true,
    };
    if !ok {
        type_error(errors, path, t, v);
    }
    ok
}

fn validate(v: &Value, s: &Node, path: &str, errors: &mut Vec<FieldError>) {
    if !check_type(v, s, path, errors) {
        return;
    }
    let body = if path.is_empty() {
        "body".to_string()
    } else {
        path.to_string()
    };

    if let Some(allowed) = &s.enum_
        && !allowed.iter().any(|a| crate::patch::json_eq(a, v))
    {
        let list: Vec<String> = allowed
            .iter()
            .map(|a| match a {
                Value::String(x) => quote(x),
                other => quote(&other.to_string()),
            })
            .collect();
        push(
            errors,
            NOT_SUPPORTED,
            path,
            format!(
                "Unsupported value: {}: supported values: {}",
                show_value(v),
                list.join(", ")
            ),
        );
    }

    match v {
        Value::Number(n) => validate_number(v, n.as_f64().unwrap_or(0.0), s, path, &body, errors),
        Value::String(st) => validate_string(v, st, s, path, &body, errors),
        Value::Array(a) => validate_array(a, s, path, &body, errors),
        Value::Object(m) => validate_object(m, s, path, &body, errors),
        _ => {}
    }

    validate_composition(v, s, path, &body, errors);
}

fn validate_number(
    v: &Value,
    x: f64,
    s: &Node,
    path: &str,
    body: &str,
    errors: &mut Vec<FieldError>,
) {
    if let Some(max) = s.maximum {
        if s.exclusive_maximum && x >= max {
            invalid(
                errors,
                INVALID,
                path,
                v,
                format!("{body} in body should be less than {}", go_float(max)),
            );
        } else if x > max {
            invalid(
                errors,
                INVALID,
                path,
                v,
                format!(
                    "{body} in body should be less than or equal to {}",
                    go_float(max)
                ),
            );
        }
    }
    if let Some(min) = s.minimum {
        if s.exclusive_minimum && x <= min {
            invalid(
                errors,
                INVALID,
                path,
                v,
                format!("{body} in body should be greater than {}", go_float(min)),
            );
        } else if x < min {
            invalid(
                errors,
                INVALID,
                path,
                v,
                format!(
                    "{body} in body should be greater than or equal to {}",
                    go_float(min)
                ),
            );
        }
    }
    if let Some(m) = s.multiple_of.filter(|m| *m > 0.0) {
        let q = x / m;
        if (q - q.round()).abs() > 1e-9 {
            invalid(
                errors,
                INVALID,
                path,
                v,
                format!("{body} in body should be a multiple of {}", go_float(m)),
            );
        }
    }
}

fn validate_string(
    v: &Value,
    st: &str,
    s: &Node,
    path: &str,
    body: &str,
    errors: &mut Vec<FieldError>,
) {
    let len = st.chars().count() as u64;
    if let Some(max) = s.max_length
        && len > max
    {
        let unit = if max == 1 { "byte" } else { "bytes" };
        push(
            errors,
            TOO_LONG,
            path,
            format!("Too long: may not be more than {max} {unit}"),
        );
    }
    if let Some(min) = s.min_length
        && len < min
    {
        invalid(
            errors,
            INVALID,
            path,
            v,
            format!("{body} in body should be at least {min} chars long"),
        );
    }
    if let Some((p, re)) = &s.pattern
        && !re.is_match(st)
    {
        invalid(
            errors,
            INVALID,
            path,
            v,
            format!("{body} in body should match '{p}'"),
        );
    }
    if let Some(f) = &s.format
        && !format_ok(f, st)
    {
        push(
            errors,
            TYPE_INVALID,
            path,
            format!(
                "Invalid value: {}: {body} in body must be of type {f}: {}",
                quote(st),
                quote(st)
            ),
        );
    }
}

fn validate_array(a: &[Value], s: &Node, path: &str, body: &str, errors: &mut Vec<FieldError>) {
    let n = a.len() as u64;
    if let Some(max) = s.max_items
        && n > max
    {
        let unit = if max == 1 { "item" } else { "items" };
        push(
            errors,
            TOO_MANY,
            path,
            format!("Too many: {n}: must have at most {max} {unit}"),
        );
    }
    if let Some(min) = s.min_items
        && n < min
    {
        push(
            errors,
            INVALID,
            path,
            format!("Invalid value: {n}: {body} in body should have at least {min} items"),
        );
    }
    match s.list_type.as_deref() {
        Some("set") => {
            for (i, x) in a.iter().enumerate() {
                if a[..i].iter().any(|y| crate::patch::json_eq(x, y)) {
                    push(
                        errors,
                        DUPLICATE,
                        &index(path, i),
                        format!("Duplicate value: {}", show_value(x)),
                    );
                }
            }
        }
        Some("map") if !s.list_map_keys.is_empty() => {
            let key_of = |x: &Value| -> Value {
                Value::Object(
                    s.list_map_keys
                        .iter()
                        .filter_map(|k| x.get(k).map(|v| (k.clone(), v.clone())))
                        .collect::<Map<_, _>>(),
                )
            };
            for (i, x) in a.iter().enumerate() {
                let k = key_of(x);
                if a[..i].iter().any(|y| crate::patch::json_eq(&key_of(y), &k)) {
                    push(
                        errors,
                        DUPLICATE,
                        &index(path, i),
                        format!("Duplicate value: {k}"),
                    );
                }
            }
        }
        _ => {
            if s.unique_items {
                let dup = a
                    .iter()
                    .enumerate()
                    .any(|(i, x)| a[..i].iter().any(|y| crate::patch::json_eq(x, y)));
                if dup {
                    push(
                        errors,
                        DUPLICATE,
                        path,
                        format!("Duplicate value: {body} in body shouldn't contain duplicates"),
                    );
                }
            }
        }
    }
    if let Some(items) = s.items.as_deref() {
        for (i, x) in a.iter().enumerate() {
            validate(x, items, &index(path, i), errors);
        }
    }
}

fn validate_object(
    m: &Map<String, Value>,
    s: &Node,
    path: &str,
    body: &str,
    errors: &mut Vec<FieldError>,
) {
    let n = m.len() as u64;
    if let Some(max) = s.max_properties
        && n > max
    {
        let unit = if max == 1 { "item" } else { "items" };
        push(
            errors,
            TOO_MANY,
            path,
            format!("Too many: {n}: must have at most {max} {unit}"),
        );
    }
    if let Some(min) = s.min_properties
        && n < min
    {
        push(
            errors,
            INVALID,
            path,
            format!("Invalid value: {n}: {body} in body should have at least {min} properties"),
        );
    }
    for r in &s.required {
        if !m.contains_key(r) {
            push(
                errors,
                REQUIRED,
                &child(path, r),
                "Required value".to_string(),
            );
        }
    }
    for (k, v) in m {
        if let Some(prop) = s.properties.get(k) {
            validate(v, prop, &child(path, k), errors);
        } else if let Some(add) = s.additional_schema() {
            validate(v, add, &child(path, k), errors);
        } else if matches!(s.additional, Additional::Allowed(false)) && !s.preserve_unknown {
            push(
                errors,
                "FieldValueForbidden",
                &child(path, k),
                "Forbidden: field not declared in schema".to_string(),
            );
        }
    }
}

fn validate_composition(v: &Value, s: &Node, path: &str, body: &str, errors: &mut Vec<FieldError>) {
    let passes = |sub: &Node| {
        let mut e = Vec::new();
        validate(v, sub, path, &mut e);
        e
    };
    let type_name = quote(type_of(v));
    if !s.all_of.is_empty() {
        let mut valid = 0;
        for sub in &s.all_of {
            let e = passes(sub);
            if e.is_empty() {
                valid += 1;
            }
            errors.extend(e);
        }
        if valid != s.all_of.len() {
            let none = if valid == 0 { ". None validated" } else { "" };
            push(
                errors,
                INVALID,
                path,
                format!(
                    "Invalid value: {type_name}: {body} in body must validate all the schemas (allOf){none}"
                ),
            );
        }
    }
    if !s.any_of.is_empty() && !s.any_of.iter().any(|sub| passes(sub).is_empty()) {
        push(
            errors,
            INVALID,
            path,
            format!(
                "Invalid value: {type_name}: {body} in body must validate at least one schema (anyOf)"
            ),
        );
    }
    if !s.one_of.is_empty() {
        let valid = s.one_of.iter().filter(|sub| passes(sub).is_empty()).count();
        if valid != 1 {
            let found = if valid == 0 {
                "Found none valid".to_string()
            } else {
                format!("Found {valid} valid alternatives")
            };
            push(
                errors,
                INVALID,
                path,
                format!(
                    "Invalid value: {type_name}: {body} in body must validate one and only one schema (oneOf). {found}"
                ),
            );
        }
    }
    if let Some(not) = &s.not
        && passes(not).is_empty()
    {
        push(
            errors,
            INVALID,
            path,
            format!(
                "Invalid value: {type_name}: {body} in body must not validate the schema (not)"
            ),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// String formats
// ---------------------------------------------------------------------------------------------

fn digits(s: &str, n: usize) -> bool {
    s.len() == n && s.bytes().all(|b| b.is_ascii_digit())
}

fn is_date(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 3
        && digits(parts[0], 4)
        && digits(parts[1], 2)
        && digits(parts[2], 2)
        && (1..=12).contains(&parts[1].parse::<u32>().unwrap_or(0))
        && (1..=31).contains(&parts[2].parse::<u32>().unwrap_or(0))
}

/// RFC 3339 date-time, loosely as Go's strfmt accepts it: `T`, `t` or a space between date and
/// time, optional seconds fraction, `Z` or a numeric offset (or none).
fn is_date_time(s: &str) -> bool {
    if s.len() < 16 || !s.is_char_boundary(10) || !s.is_char_boundary(11) {
        return false;
    }
    let (date, rest) = s.split_at(10);
    if !is_date(date) || !matches!(rest.as_bytes().first(), Some(b'T' | b't' | b' ')) {
        return false;
    }
    let time = &rest[1..];
    let (clock, zone) = match time.find(['Z', 'z', '+', '-']) {
        Some(i) => time.split_at(i),
        None => (time, ""),
    };
    let (hms, frac) = match clock.split_once('.') {
        Some((a, b)) => (a, Some(b)),
        None => (clock, None),
    };
    let hms: Vec<&str> = hms.split(':').collect();
    let clock_ok = (hms.len() == 2 || hms.len() == 3)
        && hms.iter().all(|p| digits(p, 2))
        && hms[0].parse::<u32>().is_ok_and(|h| h < 24)
        && hms[1].parse::<u32>().is_ok_and(|m| m < 60)
        && hms
            .get(2)
            .is_none_or(|sec| sec.parse::<u32>().is_ok_and(|x| x <= 60))
        && frac.is_none_or(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()));
    let zone_ok = match zone {
        "" | "Z" | "z" => true,
        z => {
            let off = &z[1..];
            digits(off, 4)
                || (off.len() == 5
                    && digits(&off[..2], 2)
                    && &off[2..3] == ":"
                    && digits(&off[3..], 2))
        }
    };
    clock_ok && zone_ok
}

fn format_ok(format: &str, s: &str) -> bool {
    match format {
        "date-time" | "datetime" => is_date_time(s),
        "date" => is_date(s),
        "uuid" => {
            let parts: Vec<&str> = s.split('-').collect();
            parts.len() == 5
                && [8, 4, 4, 4, 12]
                    .iter()
                    .zip(&parts)
                    .all(|(n, p)| p.len() == *n && p.bytes().all(|b| b.is_ascii_hexdigit()))
        }
        "ipv4" => s.parse::<std::net::Ipv4Addr>().is_ok(),
        "ipv6" => s.parse::<std::net::Ipv6Addr>().is_ok(),
        "cidr" => {
            s.split_once('/')
                .is_some_and(|(ip, bits)| match ip.parse::<std::net::IpAddr>() {
                    Ok(std::net::IpAddr::V4(_)) => bits.parse::<u8>().is_ok_and(|b| b <= 32),
                    Ok(std::net::IpAddr::V6(_)) => bits.parse::<u8>().is_ok_and(|b| b <= 128),
                    Err(_) => false,
                })
        }
        "byte" => {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.decode(s).is_ok()
        }
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// A cut-down Canary schema with the features Flagger's CRD uses.
    fn canary_schema() -> Schema {
        Schema::new(&json!({
            "type": "object",
            "properties": {
                "apiVersion": {"type": "string"},
                "kind": {"type": "string"},
                "metadata": {"type": "object"},
                "spec": {
                    "type": "object",
                    "required": ["targetRef"],
                    "properties": {
                        "targetRef": {
                            "type": "object",
                            "required": ["kind", "name"],
                            "properties": {
                                "kind": {"type": "string", "enum": ["Deployment", "DaemonSet"]},
                                "name": {"type": "string", "minLength": 1, "maxLength": 10, "pattern": "^[a-z0-9-]+$"}
                            }
                        },
                        "progressDeadlineSeconds": {"type": "integer", "format": "int32", "default": 600, "minimum": 0},
                        "suspend": {"type": "boolean", "nullable": true},
                        "service": {
                            "type": "object",
                            "properties": {
                                "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                                "targetPort": {"x-kubernetes-int-or-string": true, "nullable": true},
                                "headers": {"type": "object", "additionalProperties": {"type": "string"}}
                            }
                        },
                        "analysis": {
                            "type": "object",
                            "default": {},
                            "properties": {
                                "interval": {"type": "string", "default": "1m"},
                                "maxWeight": {"type": "integer", "maximum": 100, "minimum": 0, "exclusiveMinimum": true},
                                "threshold": {"type": "number", "multipleOf": 0.5},
                                "metrics": {
                                    "type": "array",
                                    "maxItems": 3,
                                    "minItems": 1,
                                    "items": {
                                        "type": "object",
                                        "required": ["name"],
                                        "properties": {
                                            "name": {"type": "string"},
                                            "interval": {"type": "string", "default": "1m"},
                                            "thresholdRange": {"type": "object", "properties": {"max": {"type": "number"}}}
                                        }
                                    }
                                },
                                "webhooks": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "properties": {
                                            "name": {"type": "string"},
                                            "metadata": {"type": "object", "x-kubernetes-preserve-unknown-fields": true,
                                                          "properties": {"known": {"type": "object", "properties": {"a": {"type": "string"}}}}}
                                        }
                                    }
                                }
                            }
                        },
                        "template": {"type": "object", "x-kubernetes-embedded-resource": true, "x-kubernetes-preserve-unknown-fields": true},
                        "ref": {"type": "object", "x-kubernetes-embedded-resource": true, "properties": {"spec": {"type": "object", "properties": {"a": {"type": "string"}}}}}
                    }
                },
                "status": {
                    "type": "object",
                    "properties": {
                        "phase": {"type": "string", "enum": ["Initialized", "Progressing", "Succeeded", "Failed"]},
                        "lastTransitionTime": {"type": "string", "format": "date-time"}
                    }
                }
            }
        }))
        .unwrap()
    }

    #[test]
    fn prune_table() {
        let s = canary_schema();
        // (object, expected after pruning, expected dropped paths)
        let cases = [
            (
                json!({"apiVersion": "flagger.app/v1beta1", "kind": "Canary", "metadata": {"name": "x", "anything": 1},
                       "spec": {"targetRef": {"kind": "Deployment", "name": "x", "apiVersion": "apps/v1"}, "bogus": 1}, "extra": true}),
                json!({"apiVersion": "flagger.app/v1beta1", "kind": "Canary", "metadata": {"name": "x", "anything": 1},
                       "spec": {"targetRef": {"kind": "Deployment", "name": "x"}}}),
                vec!["extra", "spec.bogus", "spec.targetRef.apiVersion"],
            ),
            (
                json!({"spec": {"analysis": {"metrics": [{"name": "a", "query": "x"}, {"name": "b"}]}}}),
                json!({"spec": {"analysis": {"metrics": [{"name": "a"}, {"name": "b"}]}}}),
                vec!["spec.analysis.metrics[0].query"],
            ),
            (
                json!({"spec": {"service": {"headers": {"x-a": "1", "x-b": "2"}}}}),
                json!({"spec": {"service": {"headers": {"x-a": "1", "x-b": "2"}}}}),
                vec![],
            ),
            (
                // Preserve-unknown keeps unknown fields but prunes inside declared ones.
                json!({"spec": {"analysis": {"webhooks": [{"name": "w", "metadata": {"free": {"x": 1}, "known": {"a": "1", "b": 2}}}]}}}),
                json!({"spec": {"analysis": {"webhooks": [{"name": "w", "metadata": {"free": {"x": 1}, "known": {"a": "1"}}}]}}}),
                vec!["spec.analysis.webhooks[0].metadata.known.b"],
            ),
            (
                json!({"spec": {"template": {"apiVersion": "v1", "kind": "Pod", "metadata": {"labels": {"a": "b"}}, "spec": {"x": 1}}}}),
                json!({"spec": {"template": {"apiVersion": "v1", "kind": "Pod", "metadata": {"labels": {"a": "b"}}, "spec": {"x": 1}}}}),
                vec![],
            ),
            (
                // Embedded resource keeps its apiVersion/kind/metadata, prunes the rest by schema.
                json!({"spec": {"ref": {"apiVersion": "v1", "kind": "X", "metadata": {"name": "n"}, "spec": {"a": "1", "b": 2}, "other": 1}}}),
                json!({"spec": {"ref": {"apiVersion": "v1", "kind": "X", "metadata": {"name": "n"}, "spec": {"a": "1"}}}}),
                vec!["spec.ref.other", "spec.ref.spec.b"],
            ),
        ];
        for (obj, want, dropped) in cases {
            let mut o = obj.clone();
            let mut got = s.prune(&mut o);
            got.sort();
            assert_eq!(o, want, "{obj}");
            assert_eq!(got, dropped, "{obj}");
        }
    }

    #[test]
    fn prune_without_items_schema_empties_objects() {
        let s = Schema::new(&json!({"type": "object", "properties": {"l": {"type": "array"}}}))
            .unwrap();
        let mut o = json!({"l": [{"a": 1}, 2]});
        assert_eq!(s.prune(&mut o), vec!["l[0].a"]);
        assert_eq!(o, json!({"l": [{}, 2]}));
    }

    #[test]
    fn defaults_table() {
        let s = canary_schema();
        let cases = [
            // Missing analysis gets {} then its own defaults inside; missing deadline gets 600.
            (
                json!({"spec": {}}),
                json!({"spec": {"progressDeadlineSeconds": 600, "analysis": {"interval": "1m"}}}),
            ),
            // Present values are kept.
            (
                json!({"spec": {"progressDeadlineSeconds": 60, "analysis": {"interval": "30s"}}}),
                json!({"spec": {"progressDeadlineSeconds": 60, "analysis": {"interval": "30s"}}}),
            ),
            // Defaults inside array items.
            (
                json!({"spec": {"analysis": {"metrics": [{"name": "a"}, {"name": "b", "interval": "5m"}]}}}),
                json!({"spec": {"progressDeadlineSeconds": 600, "analysis": {"interval": "1m", "metrics": [{"name": "a", "interval": "1m"}, {"name": "b", "interval": "5m"}]}}}),
            ),
            // A non-nullable null takes the default; a nullable null stays; a non-nullable null
            // without default is dropped.
            (
                json!({"spec": {"progressDeadlineSeconds": null, "suspend": null, "service": {"port": null}}}),
                json!({"spec": {"progressDeadlineSeconds": 600, "suspend": null, "service": {}, "analysis": {"interval": "1m"}}}),
            ),
            // Objects that are absent get no defaults for their children.
            (json!({}), json!({})),
        ];
        for (obj, want) in cases {
            let mut o = obj.clone();
            s.apply_defaults(&mut o);
            assert_eq!(o, want, "{obj}");
        }
    }

    fn errors_of(obj: Value) -> Vec<(String, String, String)> {
        canary_schema()
            .validate(&obj)
            .into_iter()
            .map(|e| (e.reason, e.field, e.message))
            .collect()
    }

    fn with_spec(spec: Value) -> Value {
        let mut base = json!({"spec": {"targetRef": {"kind": "Deployment", "name": "app"}}});
        crate::patch::merge_patch(&mut base, &json!({"spec": spec}));
        base
    }

    #[test]
    fn valid_object_has_no_errors() {
        let obj = with_spec(json!({
            "progressDeadlineSeconds": 60,
            "suspend": null,
            "service": {"port": 9898, "targetPort": "http", "headers": {"a": "b"}},
            "analysis": {"maxWeight": 50, "threshold": 2.5, "metrics": [{"name": "rate"}]},
        }));
        assert_eq!(errors_of(obj), vec![]);
        assert_eq!(
            errors_of(with_spec(json!({"service": {"targetPort": 8080}}))),
            vec![]
        );
        assert_eq!(
            errors_of(
                json!({"spec": {"targetRef": {"kind": "Deployment", "name": "a"}}, "status": {"lastTransitionTime": "2024-05-01T10:00:00Z"}})
            ),
            vec![]
        );
    }

    #[test]
    fn validation_errors_as_the_api_server_reports_them() {
        let t = |r: &str, f: &str, m: &str| (r.to_string(), f.to_string(), m.to_string());
        let cases = [
            (
                json!({"spec": {}}),
                vec![t("FieldValueRequired", "spec.targetRef", "Required value")],
            ),
            (
                json!({"spec": {"targetRef": {"kind": "StatefulSet"}}}),
                vec![
                    t(
                        "FieldValueRequired",
                        "spec.targetRef.name",
                        "Required value",
                    ),
                    t(
                        "FieldValueNotSupported",
                        "spec.targetRef.kind",
                        "Unsupported value: \"StatefulSet\": supported values: \"Deployment\", \"DaemonSet\"",
                    ),
                ],
            ),
            (
                with_spec(json!({"analysis": {"maxWeight": 150}})),
                vec![t(
                    "FieldValueInvalid",
                    "spec.analysis.maxWeight",
                    "Invalid value: 150: spec.analysis.maxWeight in body should be less than or equal to 100",
                )],
            ),
            (
                with_spec(json!({"analysis": {"maxWeight": 0}})),
                vec![t(
                    "FieldValueInvalid",
                    "spec.analysis.maxWeight",
                    "Invalid value: 0: spec.analysis.maxWeight in body should be greater than 0",
                )],
            ),
            (
                with_spec(json!({"progressDeadlineSeconds": -1})),
                vec![t(
                    "FieldValueInvalid",
                    "spec.progressDeadlineSeconds",
                    "Invalid value: -1: spec.progressDeadlineSeconds in body should be greater than or equal to 0",
                )],
            ),
            (
                with_spec(json!({"progressDeadlineSeconds": "60"})),
                vec![t(
                    "FieldValueTypeInvalid",
                    "spec.progressDeadlineSeconds",
                    "Invalid value: \"string\": spec.progressDeadlineSeconds in body must be of type integer: \"string\"",
                )],
            ),
            (
                with_spec(json!({"progressDeadlineSeconds": 1.5})),
                vec![t(
                    "FieldValueTypeInvalid",
                    "spec.progressDeadlineSeconds",
                    "Invalid value: \"number\": spec.progressDeadlineSeconds in body must be of type integer: \"number\"",
                )],
            ),
            (
                json!({"spec": {"targetRef": {"kind": "Deployment", "name": "app"}, "analysis": null}}),
                vec![t(
                    "FieldValueTypeInvalid",
                    "spec.analysis",
                    "Invalid value: \"null\": spec.analysis in body must be of type object: \"null\"",
                )],
            ),
            (
                with_spec(json!({"service": {"targetPort": true}})),
                vec![t(
                    "FieldValueTypeInvalid",
                    "spec.service.targetPort",
                    "Invalid value: \"boolean\": spec.service.targetPort in body must be of type integer,string: \"boolean\"",
                )],
            ),
            (
                with_spec(json!({"analysis": {"metrics": [{"name": "a"}, {"interval": "1m"}]}})),
                vec![t(
                    "FieldValueRequired",
                    "spec.analysis.metrics[1].name",
                    "Required value",
                )],
            ),
            (
                with_spec(json!({"analysis": {"metrics": [{"name": 1}]}})),
                vec![t(
                    "FieldValueTypeInvalid",
                    "spec.analysis.metrics[0].name",
                    "Invalid value: \"integer\": spec.analysis.metrics[0].name in body must be of type string: \"integer\"",
                )],
            ),
            (
                with_spec(json!({"analysis": {"metrics": []}})),
                vec![t(
                    "FieldValueInvalid",
                    "spec.analysis.metrics",
                    "Invalid value: 0: spec.analysis.metrics in body should have at least 1 items",
                )],
            ),
            (
                with_spec(
                    json!({"analysis": {"metrics": [{"name": "a"}, {"name": "b"}, {"name": "c"}, {"name": "d"}]}}),
                ),
                vec![t(
                    "FieldValueTooMany",
                    "spec.analysis.metrics",
                    "Too many: 4: must have at most 3 items",
                )],
            ),
            (
                with_spec(json!({"analysis": {"threshold": 0.3}})),
                vec![t(
                    "FieldValueInvalid",
                    "spec.analysis.threshold",
                    "Invalid value: 0.3: spec.analysis.threshold in body should be a multiple of 0.5",
                )],
            ),
            (
                json!({"spec": {"targetRef": {"kind": "Deployment", "name": "Bad_Name"}}}),
                vec![t(
                    "FieldValueInvalid",
                    "spec.targetRef.name",
                    "Invalid value: \"Bad_Name\": spec.targetRef.name in body should match '^[a-z0-9-]+$'",
                )],
            ),
            (
                json!({"spec": {"targetRef": {"kind": "Deployment", "name": "waytoolongname"}}}),
                vec![t(
                    "FieldValueTooLong",
                    "spec.targetRef.name",
                    "Too long: may not be more than 10 bytes",
                )],
            ),
            (
                json!({"spec": {"targetRef": {"kind": "Deployment", "name": ""}}}),
                vec![
                    t(
                        "FieldValueInvalid",
                        "spec.targetRef.name",
                        "Invalid value: \"\": spec.targetRef.name in body should be at least 1 chars long",
                    ),
                    t(
                        "FieldValueInvalid",
                        "spec.targetRef.name",
                        "Invalid value: \"\": spec.targetRef.name in body should match '^[a-z0-9-]+$'",
                    ),
                ],
            ),
            (
                with_spec(json!({"service": {"headers": {"a": 1}}})),
                vec![t(
                    "FieldValueTypeInvalid",
                    "spec.service.headers.a",
                    "Invalid value: \"integer\": spec.service.headers.a in body must be of type string: \"integer\"",
                )],
            ),
            (
                json!({"spec": {"targetRef": {"kind": "Deployment", "name": "a"}}, "status": {"lastTransitionTime": "yesterday", "phase": "Done"}}),
                vec![
                    t(
                        "FieldValueTypeInvalid",
                        "status.lastTransitionTime",
                        "Invalid value: \"yesterday\": status.lastTransitionTime in body must be of type date-time: \"yesterday\"",
                    ),
                    t(
                        "FieldValueNotSupported",
                        "status.phase",
                        "Unsupported value: \"Done\": supported values: \"Initialized\", \"Progressing\", \"Succeeded\", \"Failed\"",
                    ),
                ],
            ),
        ];
        for (obj, want) in cases {
            assert_eq!(errors_of(obj.clone()), want, "{obj}");
        }
    }

    #[test]
    fn composition_keywords() {
        let s = Schema::new(&json!({
            "type": "object",
            "properties": {
                "one": {"type": "object", "oneOf": [{"required": ["a"]}, {"required": ["b"]}]},
                "any": {"type": "integer", "anyOf": [{"maximum": 1}, {"minimum": 10}]},
                "all": {"type": "integer", "allOf": [{"minimum": 1}, {"maximum": 5}]},
                "not": {"type": "string", "not": {"enum": ["forbidden"]}}
            }
        }))
        .unwrap();
        let msgs = |o: Value| {
            s.validate(&o)
                .into_iter()
                .map(|e| format!("{}: {}", e.field, e.message))
                .collect::<Vec<_>>()
        };
        assert!(msgs(json!({"one": {"a": 1}, "any": 0, "all": 3, "not": "ok"})).is_empty());
        assert_eq!(
            msgs(json!({"one": {}})),
            vec![
                "one: Invalid value: \"object\": one in body must validate one and only one schema (oneOf). Found none valid"
            ]
        );
        assert_eq!(
            msgs(json!({"one": {"a": 1, "b": 2}})),
            vec![
                "one: Invalid value: \"object\": one in body must validate one and only one schema (oneOf). Found 2 valid alternatives"
            ]
        );
        assert_eq!(
            msgs(json!({"any": 5})),
            vec![
                "any: Invalid value: \"integer\": any in body must validate at least one schema (anyOf)"
            ]
        );
        assert_eq!(
            msgs(json!({"all": 9})),
            vec![
                "all: Invalid value: 9: all in body should be less than or equal to 5",
                "all: Invalid value: \"integer\": all in body must validate all the schemas (allOf)"
            ]
        );
        assert_eq!(
            msgs(json!({"not": "forbidden"})),
            vec!["not: Invalid value: \"string\": not in body must not validate the schema (not)"]
        );
    }

    #[test]
    fn list_types_report_duplicates() {
        let s = Schema::new(&json!({"type": "object", "properties": {
            "s": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
            "m": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"], "items": {"type": "object", "properties": {"name": {"type": "string"}, "v": {"type": "integer"}}}}
        }}))
        .unwrap();
        let errs = s.validate(
            &json!({"s": ["a", "b", "a"], "m": [{"name": "x", "v": 1}, {"name": "x", "v": 2}]}),
        );
        let got: Vec<_> = errs
            .iter()
            .map(|e| (e.reason.as_str(), e.field.as_str(), e.message.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "FieldValueDuplicate",
                    "m[1]",
                    "Duplicate value: {\"name\":\"x\"}"
                ),
                ("FieldValueDuplicate", "s[2]", "Duplicate value: \"a\""),
            ]
        );
    }

    #[test]
    fn formats() {
        let ok = [
            ("date-time", "2024-05-01T10:00:00Z"),
            ("date-time", "2024-05-01T10:00:00.123456+02:00"),
            ("date-time", "2024-05-01 10:00:00"),
            ("date", "2024-12-31"),
            ("uuid", "0b3e7f0c-5f0e-4b5e-9d3c-2a0c2b7e1f00"),
            ("ipv4", "10.0.0.1"),
            ("ipv6", "::1"),
            ("cidr", "10.0.0.0/8"),
            ("byte", "aGVsbG8="),
            ("hostname", "anything"),
        ];
        for (f, v) in ok {
            assert!(format_ok(f, v), "{f} {v}");
        }
        let bad = [
            ("date-time", "2024-05-01"),
            ("date-time", "2024-13-01T10:00:00Z"),
            ("date-time", "2024-05-01T25:00:00Z"),
            ("date-time", "2024-05-01T10:00:00+2"),
            ("date", "2024-1-1"),
            ("uuid", "xyz"),
            ("ipv4", "300.0.0.1"),
            ("cidr", "10.0.0.0/33"),
            ("byte", "not base64!"),
        ];
        for (f, v) in bad {
            assert!(!format_ok(f, v), "{f} {v}");
        }
    }

    #[test]
    fn bad_schemas_are_rejected() {
        for (schema, want) in [
            (json!("x"), "must be an object"),
            (json!({"type": "thing"}), "Unsupported value"),
            (
                json!({"type": "string", "pattern": "("}),
                "invalid regular expression",
            ),
            (
                json!({"properties": {"a": {"maxLength": -1}}}),
                "non-negative",
            ),
            (json!({"required": "a"}), "list of strings"),
        ] {
            let e = Schema::new(&schema).expect_err(&schema.to_string());
            assert!(e.contains(want), "{schema}: {e}");
        }
    }

    #[test]
    fn status_messages() {
        let errs = canary_schema().validate(&json!({"spec": {"targetRef": {"kind": "X"}}}));
        assert_eq!(
            invalid_message("Canary", "flagger.app", "podinfo", &errs),
            "Canary.flagger.app \"podinfo\" is invalid: [spec.targetRef.name: Required value, spec.targetRef.kind: Unsupported value: \"X\": supported values: \"Deployment\", \"DaemonSet\"]"
        );
        assert_eq!(
            invalid_message("ConfigMap", "", "c", &errs[..1]),
            "ConfigMap \"c\" is invalid: spec.targetRef.name: Required value"
        );
        assert_eq!(
            unknown_field_warnings(&["spec.foo".to_string()]),
            vec!["unknown field \"spec.foo\""]
        );
    }

    #[test]
    fn go_float_formatting() {
        assert_eq!(go_float(100.0), "100");
        assert_eq!(go_float(0.5), "0.5");
        assert_eq!(go_float(100000.0), "100000");
        assert_eq!(go_float(1e6), "1e+06");
        assert_eq!(go_float(1.5e21), "1.5e+21");
        assert_eq!(go_float(0.00001), "1e-05");
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i32>().prop_map(|n| json!(n)),
            (-1e3f64..1e3).prop_map(|n| json!(n)),
            "[a-z]{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 40, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("spec".to_string()),
                        Just("analysis".to_string()),
                        Just("metrics".to_string()),
                        Just("targetRef".to_string()),
                        Just("name".to_string()),
                        Just("service".to_string()),
                        "[a-z]{1,3}".prop_map(String::from),
                    ],
                    inner,
                    0..5
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn random_objects_never_panic_and_prune_is_idempotent(obj in arb_json()) {
            let s = canary_schema();
            let mut o = obj.clone();
            s.prune(&mut o);
            let mut again = o.clone();
            prop_assert!(s.prune(&mut again).is_empty());
            prop_assert_eq!(&again, &o);
            s.apply_defaults(&mut o);
            let _ = s.validate(&o);
        }

        #[test]
        fn random_schemas_never_panic(schema in arb_json(), obj in arb_json()) {
            if let Ok(s) = Schema::new(&schema) {
                let mut o = obj.clone();
                s.prune(&mut o);
                s.apply_defaults(&mut o);
                let _ = s.validate(&o);
            }
        }
    }
}
