//! PATCH semantics of the Kubernetes API server, as pure functions over JSON values.
//!
//! - [`merge_patch`]: RFC 7386 JSON merge patch. Objects merge recursively, `null` deletes a
//!   member, everything else (arrays included) replaces.
//! - [`json_patch`]: RFC 6902 JSON patch, every op (`add`, `remove`, `replace`, `move`, `copy`,
//!   `test`), RFC 6901 pointers with `~0`/`~1` escapes and the `-` end-of-array index. All or
//!   nothing: on any error the target is left untouched. A malformed patch document is
//!   [`PatchError::Invalid`] (the server answers 400); an op that cannot apply (missing path,
//!   failed `test`) is [`PatchError::Failed`] (the server answers 422).
//! - [`strategic_merge_patch`]: the subset of strategic merge patch that kubectl needs, see below.
//! - [`apply_patch`]: server-side apply approximated as create-or-merge, see below.
//!
//! # Strategic merge patch subset
//!
//! The real server reads patch strategies from the Go struct tags of built-in types. This module
//! has no types, so it decides by the **name of the list field** (documented table below):
//!
//! | field | merge key |
//! |---|---|
//! | `containers`, `initContainers`, `ephemeralContainers`, `env`, `volumes`, `imagePullSecrets`, `resourceClaims`, `schedulingGates`, `secrets` | `name` |
//! | `volumeMounts` | `mountPath` |
//! | `volumeDevices` | `devicePath` |
//! | `ports` whose elements carry `containerPort` (container ports) | `containerPort` |
//! | `ports` otherwise (Service ports) | `port` |
//! | `conditions` | `type` |
//! | `ownerReferences` | `uid` |
//! | `hostAliases`, `podIPs`, `hostIPs` | `ip` |
//! | `topologySpreadConstraints` | `topologyKey` |
//! | `finalizers` | merged as a set of strings (`metadata.finalizers`) |
//!
//! Every other list (`args`, `command`, `tolerations`, `envFrom`, ...) is replaced by the patch's
//! list, as Kubernetes does for lists without a patch strategy. A keyed list whose elements are
//! not all objects is replaced too (the real server would reject the patch).
//!
//! Maps merge recursively; `null` deletes a key. Directives:
//! - `$patch: replace` in a map replaces the map, `$patch: delete` empties it; as an element of a
//!   keyed list `{"$patch": "replace"}` replaces the whole list and
//!   `{"$patch": "delete", "<key>": v}` removes the elements with that key.
//! - `$retainKeys: [..]` drops the target's keys not listed (and rejects a patch that sets a key
//!   outside the list).
//! - `$setElementOrder/<field>: [..]` orders the merged list as listed; elements only the server
//!   has keep their place relative to the others, as upstream's `normalizeElementOrder`.
//! - `$deleteFromPrimitiveList/<field>: [..]` removes those values from a primitive list.
//!
//! Directives never reach the result: values added where the target had nothing are cleaned of
//! directives and `null`s the same way. New elements of a keyed list without a
//! `$setElementOrder` are placed before the server-only elements, exactly as upstream's ordering
//! rule produces (kubectl always sends `$setElementOrder` with `apply`, so order follows the file).
//! Unknown `$` keys are rejected. Custom resources do not support strategic merge patch on a real
//! server (415); refusing it for them is the caller's decision.
//!
//! # Server-side apply approximation
//!
//! [`apply_patch`] merges the applied configuration into the live object (or creates it from the
//! configuration when the live object is `null`): fields in the configuration overwrite, maps
//! merge, lists with a merge key from the table above merge by key (new elements appended),
//! `finalizers` merge as a set, other lists are replaced, `null` removes a field. There is no
//! field ownership: no `managedFields` tracking, no conflicts, and fields the applier stops
//! sending are **not** removed. Lists are not schema-aware (`x-kubernetes-list-type` of CRDs is
//! ignored: CRD lists are replaced).
use serde_json::{Map, Value};

#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    /// The patch document is malformed (400 BadRequest).
    #[error("{0}")]
    Invalid(String),
    /// A json-patch `test` op failed or a path did not exist (422 Invalid / 409 in some servers).
    #[error("{0}")]
    Failed(String),
}

fn invalid<T>(msg: impl Into<String>) -> Result<T, PatchError> {
    Err(PatchError::Invalid(msg.into()))
}

/// RFC 7386 JSON merge patch (`application/merge-patch+json`).
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in patch {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// RFC 6902 JSON patch
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
enum Op {
    Add(Vec<String>, Value),
    Remove(Vec<String>),
    Replace(Vec<String>, Value),
    Move {
        from: Vec<String>,
        path: Vec<String>,
    },
    Copy {
        from: Vec<String>,
        path: Vec<String>,
    },
    Test(Vec<String>, Value),
}

/// RFC 6902 JSON patch (`application/json-patch+json`), all ops incl. `test`; atomic (target is
/// unchanged on error).
pub fn json_patch(target: &mut Value, patch: &Value) -> Result<(), PatchError> {
    let Value::Array(ops) = patch else {
        return invalid("json patch must be a JSON array of operations");
    };
    let ops = ops
        .iter()
        .enumerate()
        .map(|(i, op)| parse_op(i, op))
        .collect::<Result<Vec<_>, _>>()?;
    let mut doc = target.clone();
    for (i, op) in ops.into_iter().enumerate() {
        apply_op(&mut doc, op)
            .map_err(|e| PatchError::Failed(format!("json patch operation {i}: {e}")))?;
    }
    *target = doc;
    Ok(())
}

fn parse_op(i: usize, op: &Value) -> Result<Op, PatchError> {
    let Some(obj) = op.as_object() else {
        return invalid(format!("json patch operation {i} must be an object"));
    };
    let name = match obj.get("op") {
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return invalid(format!("json patch operation {i}: \"op\" must be a string")),
        None => return invalid(format!("json patch operation {i}: missing \"op\"")),
    };
    let pointer = |field: &str| -> Result<Vec<String>, PatchError> {
        match obj.get(field) {
            Some(Value::String(s)) => parse_pointer(s).map_err(|e| {
                PatchError::Invalid(format!("json patch operation {i}: \"{field}\": {e}"))
            }),
            Some(_) => invalid(format!(
                "json patch operation {i}: \"{field}\" must be a string"
            )),
            None => invalid(format!(
                "json patch operation {i} ({name}): missing \"{field}\""
            )),
        }
    };
    let value = || -> Result<Value, PatchError> {
        obj.get("value").cloned().ok_or_else(|| {
            PatchError::Invalid(format!(
                "json patch operation {i} ({name}): missing \"value\""
            ))
        })
    };
    Ok(match name {
        "add" => Op::Add(pointer("path")?, value()?),
        "remove" => Op::Remove(pointer("path")?),
        "replace" => Op::Replace(pointer("path")?, value()?),
        "move" => Op::Move {
            from: pointer("from")?,
            path: pointer("path")?,
        },
        "copy" => Op::Copy {
            from: pointer("from")?,
            path: pointer("path")?,
        },
        "test" => Op::Test(pointer("path")?, value()?),
        other => return invalid(format!("json patch operation {i}: unknown op {other:?}")),
    })
}

/// Parses an RFC 6901 pointer into unescaped reference tokens.
fn parse_pointer(s: &str) -> Result<Vec<String>, String> {
    if s.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = s.strip_prefix('/') else {
        return Err(format!(
            "JSON pointer {s:?} must be empty or start with '/'"
        ));
    };
    rest.split('/')
        .map(|tok| {
            let mut out = String::with_capacity(tok.len());
            let mut chars = tok.chars();
            while let Some(c) = chars.next() {
                if c == '~' {
                    match chars.next() {
                        Some('0') => out.push('~'),
                        Some('1') => out.push('/'),
                        _ => {
                            return Err(format!(
                                "JSON pointer {s:?}: '~' must be followed by '0' or '1'"
                            ));
                        }
                    }
                } else {
                    out.push(c);
                }
            }
            Ok(out)
        })
        .collect()
}

fn show(path: &[String]) -> String {
    path.iter()
        .map(|t| format!("/{}", t.replace('~', "~0").replace('/', "~1")))
        .collect()
}

/// An existing array index: decimal without leading zeros.
fn array_index(tok: &str, len: usize, allow_end: bool) -> Result<usize, String> {
    if tok == "-" && allow_end {
        return Ok(len);
    }
    let valid = !tok.is_empty()
        && tok.bytes().all(|b| b.is_ascii_digit())
        && (tok == "0" || !tok.starts_with('0'));
    let idx = if valid {
        tok.parse::<usize>().ok()
    } else {
        None
    };
    match idx {
        Some(i) if i < len || (allow_end && i == len) => Ok(i),
        Some(i) => Err(format!("index {i} out of range (array length {len})")),
        None => Err(format!("{tok:?} is not a valid array index")),
    }
}

fn get<'a>(doc: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = doc;
    for tok in path {
        cur = match cur {
            Value::Object(m) => m.get(tok)?,
            Value::Array(a) => a.get(array_index(tok, a.len(), false).ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

fn get_mut<'a>(doc: &'a mut Value, path: &[String]) -> Result<&'a mut Value, String> {
    let mut cur = doc;
    for (depth, tok) in path.iter().enumerate() {
        let here = || show(&path[..=depth]);
        cur = match cur {
            Value::Object(m) => m
                .get_mut(tok)
                .ok_or_else(|| format!("path {} does not exist", here()))?,
            Value::Array(a) => {
                let len = a.len();
                let i =
                    array_index(tok, len, false).map_err(|e| format!("path {}: {e}", here()))?;
                a.get_mut(i)
                    .ok_or_else(|| format!("path {} does not exist", here()))?
            }
            _ => {
                return Err(format!(
                    "path {} does not exist (parent is not an object or array)",
                    here()
                ));
            }
        };
    }
    Ok(cur)
}

fn add(doc: &mut Value, path: &[String], value: Value) -> Result<(), String> {
    let Some((last, parent_path)) = path.split_last() else {
        *doc = value;
        return Ok(());
    };
    match get_mut(doc, parent_path)? {
        Value::Object(m) => {
            m.insert(last.clone(), value);
            Ok(())
        }
        Value::Array(a) => {
            let i = array_index(last, a.len(), true)
                .map_err(|e| format!("path {}: {e}", show(path)))?;
            a.insert(i, value);
            Ok(())
        }
        _ => Err(format!(
            "path {}: parent is not an object or array",
            show(path)
        )),
    }
}

fn remove(doc: &mut Value, path: &[String]) -> Result<Value, String> {
    let Some((last, parent_path)) = path.split_last() else {
        return Err("cannot remove the whole document".to_string());
    };
    match get_mut(doc, parent_path)? {
        Value::Object(m) => m
            .remove(last)
            .ok_or_else(|| format!("path {} does not exist", show(path))),
        Value::Array(a) => {
            let i = array_index(last, a.len(), false)
                .map_err(|e| format!("path {}: {e}", show(path)))?;
            Ok(a.remove(i))
        }
        _ => Err(format!("path {} does not exist", show(path))),
    }
}

fn apply_op(doc: &mut Value, op: Op) -> Result<(), String> {
    match op {
        Op::Add(path, value) => add(doc, &path, value),
        Op::Remove(path) => remove(doc, &path).map(drop),
        Op::Replace(path, value) => {
            *get_mut(doc, &path)? = value;
            Ok(())
        }
        Op::Move { from, path } => {
            if from == path {
                return get(doc, &from)
                    .map(drop)
                    .ok_or_else(|| format!("path {} does not exist", show(&from)));
            }
            if path.len() > from.len() && path.starts_with(&from) {
                return Err(format!(
                    "cannot move {} into its own child {}",
                    show(&from),
                    show(&path)
                ));
            }
            let value = remove(doc, &from)?;
            add(doc, &path, value)
        }
        Op::Copy { from, path } => {
            let value = get(doc, &from)
                .cloned()
                .ok_or_else(|| format!("path {} does not exist", show(&from)))?;
            add(doc, &path, value)
        }
        Op::Test(path, expected) => match get(doc, &path) {
            Some(actual) if json_eq(actual, &expected) => Ok(()),
            Some(actual) => Err(format!(
                "test failed: {} is {actual}, not {expected}",
                show(&path)
            )),
            None => Err(format!("test failed: path {} does not exist", show(&path))),
        },
    }
}

/// JSON equality where numbers compare by value (`1` equals `1.0`), as RFC 6902 `test` requires.
pub fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if let (Some(x), Some(y)) = (x.as_i64(), y.as_i64()) {
                x == y
            } else if let (Some(x), Some(y)) = (x.as_u64(), y.as_u64()) {
                x == y
            } else {
                x.as_f64() == y.as_f64()
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

// ---------------------------------------------------------------------------------------------
// Strategic merge patch and server-side apply
// ---------------------------------------------------------------------------------------------

/// Strategic merge patch (`application/strategic-merge-patch+json`), the subset kubectl needs.
/// Atomic: the target is unchanged on error.
pub fn strategic_merge_patch(target: &mut Value, patch: &Value) -> Result<(), PatchError> {
    merge_document(target, patch, Mode::Strategic)
}

/// Server-side apply (`application/apply-patch+yaml`, body may be YAML or JSON), approximated as
/// create-or-merge: see the module docs for what is approximated.
pub fn apply_patch(target: &mut Value, patch: &Value) -> Result<(), PatchError> {
    merge_document(target, patch, Mode::Apply)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Strategic,
    /// New keyed-list elements go to the end; otherwise as `Strategic`.
    Apply,
}

fn merge_document(target: &mut Value, patch: &Value, mode: Mode) -> Result<(), PatchError> {
    let Value::Object(patch) = patch else {
        return invalid("patch body must be a JSON object");
    };
    let mut doc = match target {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    merge_map(&mut doc, patch, mode)?;
    *target = Value::Object(doc);
    Ok(())
}

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ORDER: &str = "$setElementOrder/";
const DELETE_PRIMITIVE: &str = "$deleteFromPrimitiveList/";

/// How a list field merges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ListStrategy {
    Replace,
    /// Union of scalars (`metadata.finalizers`).
    Set,
    ByKey(&'static str),
}

fn list_strategy(field: &str, original: &[Value], patch: &[Value]) -> ListStrategy {
    let key = match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "resourceClaims"
        | "schedulingGates"
        | "secrets" => "name",
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "conditions" => "type",
        "ownerReferences" => "uid",
        "hostAliases" | "podIPs" | "hostIPs" => "ip",
        "topologySpreadConstraints" => "topologyKey",
        "ports" => {
            let has = |k: &str| patch.iter().chain(original).any(|e| e.get(k).is_some());
            if has("containerPort") {
                "containerPort"
            } else {
                "port"
            }
        }
        "finalizers" => {
            let scalars = patch
                .iter()
                .chain(original)
                .all(|e| !e.is_object() && !e.is_array());
            return if scalars {
                ListStrategy::Set
            } else {
                ListStrategy::Replace
            };
        }
        _ => return ListStrategy::Replace,
    };
    if patch.iter().chain(original).all(Value::is_object) {
        ListStrategy::ByKey(key)
    } else {
        ListStrategy::Replace
    }
}

fn merge_map(
    original: &mut Map<String, Value>,
    patch: &Map<String, Value>,
    mode: Mode,
) -> Result<(), PatchError> {
    if let Some(directive) = patch.get(DIRECTIVE) {
        match directive.as_str() {
            Some("replace") => {
                let mut rest = patch.clone();
                rest.remove(DIRECTIVE);
                let mut fresh = Map::new();
                merge_map(&mut fresh, &rest, mode)?;
                *original = fresh;
                return Ok(());
            }
            Some("delete") => {
                original.clear();
                return Ok(());
            }
            // `merge` is the default behaviour of a map.
            Some("merge") => {}
            _ => {
                return invalid(format!(
                    "unknown patch type: {directive} in map: {}",
                    Value::Object(patch.clone())
                ));
            }
        }
    }

    if let Some(retain) = patch.get(RETAIN_KEYS) {
        let Some(keys) = retain.as_array().filter(|a| a.iter().all(Value::is_string)) else {
            return invalid("$retainKeys must be a list of field names");
        };
        let listed = |k: &str| keys.iter().any(|x| x.as_str() == Some(k));
        for (k, v) in patch {
            if !v.is_null() && !k.starts_with('$') && !listed(k) {
                return invalid(format!(
                    "$retainKeys does not list {k:?}, which the patch sets"
                ));
            }
        }
        original.retain(|k, _| listed(k));
    }

    // Lists with an explicit order are merged and ordered first, then skipped below.
    let mut ordered: Vec<&str> = Vec::new();
    for (k, order) in patch {
        let Some(field) = k.strip_prefix(SET_ORDER) else {
            continue;
        };
        let Some(order) = order.as_array() else {
            return invalid(format!("{k} must be a list"));
        };
        let server: Vec<Value> = match original.get(field) {
            Some(Value::Array(a)) => a.clone(),
            _ => Vec::new(),
        };
        let merged = match patch.get(field) {
            Some(Value::Array(p)) => merge_list(field, &server, p, mode)?,
            None if original.get(field).is_some_and(Value::is_array) => server.clone(),
            // The field is deleted, replaced by a non-list, or absent on both sides.
            _ => continue,
        };
        let key = match list_strategy(field, &server, order) {
            ListStrategy::ByKey(k) => Some(k),
            _ => None,
        };
        original.insert(
            field.to_string(),
            Value::Array(normalize_order(merged, order, &server, key)),
        );
        ordered.push(field);
    }

    for (k, v) in patch {
        if k == DIRECTIVE
            || k == RETAIN_KEYS
            || k.starts_with(SET_ORDER)
            || ordered.contains(&k.as_str())
        {
            continue;
        }
        if let Some(field) = k.strip_prefix(DELETE_PRIMITIVE) {
            let Some(remove) = v.as_array() else {
                return invalid(format!("{k} must be a list"));
            };
            if let Some(Value::Array(list)) = original.get_mut(field) {
                list.retain(|x| !remove.iter().any(|r| json_eq(r, x)));
            }
            continue;
        }
        if k.starts_with('$') {
            return invalid(format!("unknown strategic merge patch directive {k:?}"));
        }
        if v.is_null() {
            original.remove(k);
            continue;
        }
        match (original.get_mut(k), v) {
            (Some(Value::Object(o)), Value::Object(p)) => merge_map(o, p, mode)?,
            (Some(Value::Array(o)), Value::Array(p)) => {
                let merged = merge_list(k, o, p, mode)?;
                *o = merged;
            }
            _ => {
                let cleaned = clean(k, v, mode)?;
                original.insert(k.clone(), cleaned);
            }
        }
    }
    Ok(())
}

/// A patch value put where the target has nothing (or a different type): the same merge into
/// emptiness, which strips directives and `null`s.
fn clean(field: &str, v: &Value, mode: Mode) -> Result<Value, PatchError> {
    Ok(match v {
        Value::Object(p) => {
            let mut m = Map::new();
            merge_map(&mut m, p, mode)?;
            Value::Object(m)
        }
        Value::Array(p) => Value::Array(merge_list(field, &[], p, mode)?),
        other => other.clone(),
    })
}

fn directive_of(v: &Value) -> Option<&Value> {
    v.as_object().and_then(|m| m.get(DIRECTIVE))
}

fn merge_list(
    field: &str,
    original: &[Value],
    patch: &[Value],
    mode: Mode,
) -> Result<Vec<Value>, PatchError> {
    match list_strategy(field, original, patch) {
        ListStrategy::Replace => patch
            .iter()
            .filter(|e| directive_of(e).is_none())
            .map(|e| clean(field, e, mode))
            .collect(),
        ListStrategy::Set => {
            let mut merged: Vec<Value> = Vec::with_capacity(original.len() + patch.len());
            for v in original.iter().chain(patch) {
                if !merged.iter().any(|m| json_eq(m, v)) {
                    merged.push(v.clone());
                }
            }
            Ok(match mode {
                Mode::Apply => merged,
                Mode::Strategic => normalize_order(merged, patch, original, None),
            })
        }
        ListStrategy::ByKey(key) => merge_keyed_list(field, key, original, patch, mode),
    }
}

fn merge_keyed_list(
    field: &str,
    key: &str,
    original: &[Value],
    patch: &[Value],
    mode: Mode,
) -> Result<Vec<Value>, PatchError> {
    let mut server: Vec<Value> = original.to_vec();
    let mut items: Vec<&Map<String, Value>> = Vec::new();
    let mut replace = false;
    for elem in patch {
        let Value::Object(m) = elem else { continue };
        match m.get(DIRECTIVE) {
            None => items.push(m),
            Some(d) => match d.as_str() {
                Some("delete") => {
                    let Some(kv) = m.get(key) else {
                        return invalid(format!(
                            "{field}: delete directive {} does not contain declared merge key: {key}",
                            Value::Object(m.clone())
                        ));
                    };
                    server.retain(|s| !s.get(key).is_some_and(|x| json_eq(x, kv)));
                }
                Some("replace") => replace = true,
                Some("merge") => {
                    return invalid(format!(
                        "{field}: merging lists cannot yet be specified in the patch"
                    ));
                }
                _ => return invalid(format!("{field}: unknown patch type: {d}")),
            },
        }
    }
    if replace {
        return items
            .into_iter()
            .map(|m| clean(field, &Value::Object(m.clone()), mode))
            .collect();
    }
    let server_order = server.clone();
    let mut patch_order: Vec<Value> = Vec::with_capacity(items.len());
    for item in items {
        let Some(kv) = item.get(key) else {
            return invalid(format!(
                "{field}: map: {} does not contain declared merge key: {key}",
                Value::Object(item.clone())
            ));
        };
        patch_order.push(Value::Object(Map::from_iter([(
            key.to_string(),
            kv.clone(),
        )])));
        let existing = server
            .iter_mut()
            .find(|s| s.get(key).is_some_and(|x| json_eq(x, kv)));
        match existing {
            Some(Value::Object(target)) => merge_map(target, item, mode)?,
            _ => server.push(clean(field, &Value::Object(item.clone()), mode)?),
        }
    }
    Ok(match mode {
        Mode::Apply => server,
        Mode::Strategic => normalize_order(server, &patch_order, &server_order, Some(key)),
    })
}

/// Upstream's `normalizeElementOrder`: the elements named by `patch_order` take that order, the
/// others keep the server's order, and the two runs are interleaved by server position.
fn normalize_order(
    merged: Vec<Value>,
    patch_order: &[Value],
    server_order: &[Value],
    key: Option<&str>,
) -> Vec<Value> {
    let id = |v: &Value| -> Option<Value> {
        match key {
            Some(k) => v.get(k).cloned(),
            None => Some(v.clone()),
        }
    };
    let index_in = |list: &[Value], v: &Value| -> Option<usize> {
        let want = id(v)?;
        list.iter()
            .position(|x| id(x).is_some_and(|x| json_eq(&x, &want)))
    };
    let (mut from_patch, mut server_only): (Vec<Value>, Vec<Value>) = merged
        .into_iter()
        .partition(|v| index_in(patch_order, v).is_some());
    from_patch.sort_by_key(|v| index_in(patch_order, v).unwrap_or(usize::MAX));
    server_only.sort_by_key(|v| index_in(server_order, v).unwrap_or(usize::MAX));

    let mut out = Vec::with_capacity(from_patch.len() + server_only.len());
    let mut left = server_only.into_iter().peekable();
    let mut right = from_patch.into_iter().peekable();
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(l), Some(r)) => matches!(
                (index_in(server_order, l), index_in(server_order, r)),
                (Some(li), Some(ri)) if li < ri
            ),
        };
        let next = if take_left { left.next() } else { right.next() };
        out.extend(next);
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn merge_patch_rfc7386_examples() {
        // The examples of RFC 7386 appendix A.
        let cases = [
            (json!({"a":"b"}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"b"}), json!({"b":"c"}), json!({"a":"b","b":"c"})),
            (json!({"a":"b"}), json!({"a":null}), json!({})),
            (
                json!({"a":"b","b":"c"}),
                json!({"a":null}),
                json!({"b":"c"}),
            ),
            (json!({"a":["b"]}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"c"}), json!({"a":["b"]}), json!({"a":["b"]})),
            (
                json!({"a":{"b":"c"}}),
                json!({"a":{"b":"d","c":null}}),
                json!({"a":{"b":"d"}}),
            ),
            (json!({"a":[{"b":"c"}]}), json!({"a":[1]}), json!({"a":[1]})),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a":"b"}), json!(["c"]), json!(["c"])),
            (json!({"a":"foo"}), json!(null), json!(null)),
            (json!({"a":"foo"}), json!("bar"), json!("bar")),
            (json!({"e":null}), json!({"a":1}), json!({"e":null,"a":1})),
            (json!([1, 2]), json!({"a":"b","c":null}), json!({"a":"b"})),
            (
                json!({}),
                json!({"a":{"bb":{"ccc":null}}}),
                json!({"a":{"bb":{}}}),
            ),
        ];
        for (target, patch, want) in cases {
            let mut t = target.clone();
            merge_patch(&mut t, &patch);
            assert_eq!(t, want, "{target} + {patch}");
        }
    }

    fn jp(target: Value, patch: Value) -> Result<Value, PatchError> {
        let mut t = target;
        json_patch(&mut t, &patch).map(|()| t)
    }

    #[test]
    fn json_patch_ops() {
        let doc = json!({"spec": {"replicas": 1, "list": ["a", "b"]}, "a/b": 1, "m~n": 2});
        let ok_cases = [
            (
                json!([{"op":"add","path":"/spec/x","value":1}]),
                json!({"spec":{"replicas":1,"list":["a","b"],"x":1},"a/b":1,"m~n":2}),
            ),
            (
                json!([{"op":"add","path":"/spec/list/1","value":"z"}]),
                json!({"spec":{"replicas":1,"list":["a","z","b"]},"a/b":1,"m~n":2}),
            ),
            (
                json!([{"op":"add","path":"/spec/list/-","value":"z"}]),
                json!({"spec":{"replicas":1,"list":["a","b","z"]},"a/b":1,"m~n":2}),
            ),
            (
                json!([{"op":"add","path":"/spec/list/2","value":"z"}]),
                json!({"spec":{"replicas":1,"list":["a","b","z"]},"a/b":1,"m~n":2}),
            ),
            (
                json!([{"op":"remove","path":"/spec/list/0"}]),
                json!({"spec":{"replicas":1,"list":["b"]},"a/b":1,"m~n":2}),
            ),
            (
                json!([{"op":"remove","path":"/a~1b"}, {"op":"remove","path":"/m~0n"}]),
                json!({"spec":{"replicas":1,"list":["a","b"]}}),
            ),
            (
                json!([{"op":"replace","path":"/spec/replicas","value":3}]),
                json!({"spec":{"replicas":3,"list":["a","b"]},"a/b":1,"m~n":2}),
            ),
            (
                json!([{"op":"move","from":"/spec/list","path":"/list"}]),
                json!({"spec":{"replicas":1},"list":["a","b"],"a/b":1,"m~n":2}),
            ),
            (
                json!([{"op":"copy","from":"/spec/replicas","path":"/r"}]),
                json!({"spec":{"replicas":1,"list":["a","b"]},"r":1,"a/b":1,"m~n":2}),
            ),
            (
                json!([{"op":"test","path":"/spec/replicas","value":1.0}, {"op":"test","path":"/spec/list","value":["a","b"]}]),
                doc.clone(),
            ),
            (
                json!([{"op":"add","path":"","value":{"x":1}}]),
                json!({"x":1}),
            ),
            (json!([{"op":"replace","path":"","value":[1]}]), json!([1])),
            (
                json!([{"op":"add","path":"/spec/n","value":null}]),
                json!({"spec":{"replicas":1,"list":["a","b"],"n":null},"a/b":1,"m~n":2}),
            ),
            (json!([]), doc.clone()),
        ];
        for (patch, want) in ok_cases {
            assert_eq!(
                jp(doc.clone(), patch.clone()).unwrap_or_else(|e| panic!("{patch}: {e}")),
                want,
                "{patch}"
            );
        }
    }

    #[test]
    fn json_patch_failures_leave_target_unchanged() {
        let doc = json!({"spec": {"replicas": 1, "list": ["a"]}});
        let failed = [
            json!([{"op":"test","path":"/spec/replicas","value":2}]),
            json!([{"op":"replace","path":"/spec/replicas","value":5},{"op":"test","path":"/spec/replicas","value":1}]),
            json!([{"op":"remove","path":"/spec/missing"}]),
            json!([{"op":"replace","path":"/missing/x","value":1}]),
            json!([{"op":"add","path":"/missing/x","value":1}]),
            json!([{"op":"add","path":"/spec/list/5","value":1}]),
            json!([{"op":"add","path":"/spec/list/01","value":1}]),
            json!([{"op":"remove","path":"/spec/list/-"}]),
            json!([{"op":"move","from":"/spec","path":"/spec/inner"}]),
            json!([{"op":"copy","from":"/nope","path":"/x"}]),
            json!([{"op":"add","path":"/spec/replicas/x","value":1}]),
            json!([{"op":"remove","path":""}]),
        ];
        for patch in failed {
            let mut t = doc.clone();
            let e = json_patch(&mut t, &patch).expect_err(&patch.to_string());
            assert!(matches!(e, PatchError::Failed(_)), "{patch}: {e:?}");
            assert_eq!(t, doc, "{patch} must not change the target");
        }
        let malformed = [
            json!({"op":"add"}),
            json!([{"path":"/a","value":1}]),
            json!([{"op":"jump","path":"/a"}]),
            json!([{"op":"add","path":"/a"}]),
            json!([{"op":"add","path":"a","value":1}]),
            json!([{"op":"add","path":"/a~2","value":1}]),
            json!([{"op":"move","path":"/a"}]),
            json!([1]),
        ];
        for patch in malformed {
            let mut t = doc.clone();
            let e = json_patch(&mut t, &patch).expect_err(&patch.to_string());
            assert!(matches!(e, PatchError::Invalid(_)), "{patch}: {e:?}");
            assert_eq!(t, doc);
        }
        let e = jp(
            doc.clone(),
            json!([{"op":"test","path":"/spec/replicas","value":2}]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("/spec/replicas"), "{e}");
    }

    fn smp(target: Value, patch: Value) -> Value {
        let mut t = target;
        strategic_merge_patch(&mut t, &patch).unwrap_or_else(|e| panic!("{patch}: {e}"));
        t
    }

    fn pod(containers: Value) -> Value {
        json!({"spec": {"template": {"spec": {"containers": containers}}}})
    }

    #[test]
    fn smp_merges_containers_by_name() {
        // kubectl set image: only the named container changes.
        let live = pod(
            json!([{"name":"app","image":"a:1","ports":[{"containerPort":80}]},{"name":"side","image":"s:1"}]),
        );
        let got = smp(live, pod(json!([{"name":"side","image":"s:2"}])));
        assert_eq!(
            got,
            pod(
                json!([{"name":"app","image":"a:1","ports":[{"containerPort":80}]},{"name":"side","image":"s:2"}])
            )
        );
    }

    #[test]
    fn smp_keyed_lists_table() {
        // (field, live list, patch list, expected)
        let cases = [
            (
                "env",
                json!([{"name":"A","value":"1"},{"name":"B","value":"2"}]),
                json!([{"name":"B","value":"3"}]),
                json!([{"name":"A","value":"1"},{"name":"B","value":"3"}]),
            ),
            // A new element without $setElementOrder lands before server-only ones, as upstream.
            (
                "env",
                json!([{"name":"A","value":"1"}]),
                json!([{"name":"C","value":"9"}]),
                json!([{"name":"C","value":"9"},{"name":"A","value":"1"}]),
            ),
            (
                "env",
                json!([{"name":"A","value":"1"},{"name":"B"}]),
                json!([{"$patch":"delete","name":"A"}]),
                json!([{"name":"B"}]),
            ),
            (
                "env",
                json!([{"name":"A","value":"1"},{"name":"B"}]),
                json!([{"$patch":"replace"},{"name":"Z"}]),
                json!([{"name":"Z"}]),
            ),
            (
                "env",
                json!([{"name":"A","value":"1","valueFrom":null}]),
                json!([{"name":"A","value":null}]),
                json!([{"name":"A","valueFrom":null}]),
            ),
            (
                "volumeMounts",
                json!([{"mountPath":"/a","name":"x"},{"mountPath":"/b","name":"x"}]),
                json!([{"mountPath":"/b","readOnly":true}]),
                json!([{"mountPath":"/a","name":"x"},{"mountPath":"/b","name":"x","readOnly":true}]),
            ),
            (
                "ports",
                json!([{"containerPort":80,"name":"http"},{"containerPort":9090}]),
                json!([{"containerPort":80,"protocol":"TCP"}]),
                json!([{"containerPort":80,"name":"http","protocol":"TCP"},{"containerPort":9090}]),
            ),
            (
                "ports",
                json!([{"port":80,"targetPort":8080},{"port":443}]),
                json!([{"port":80,"targetPort":9000}]),
                json!([{"port":80,"targetPort":9000},{"port":443}]),
            ),
            (
                "volumes",
                json!([{"name":"v","emptyDir":{}}]),
                json!([{"name":"v","configMap":{"name":"c"},"emptyDir":null}]),
                json!([{"name":"v","configMap":{"name":"c"}}]),
            ),
            (
                "imagePullSecrets",
                json!([{"name":"a"}]),
                json!([{"name":"b"}]),
                json!([{"name":"b"},{"name":"a"}]),
            ),
            (
                "conditions",
                json!([{"type":"Ready","status":"False"},{"type":"X","status":"True"}]),
                json!([{"type":"Ready","status":"True"}]),
                json!([{"type":"Ready","status":"True"},{"type":"X","status":"True"}]),
            ),
            (
                "ownerReferences",
                json!([{"uid":"1","name":"a"}]),
                json!([{"uid":"1","controller":true}]),
                json!([{"uid":"1","name":"a","controller":true}]),
            ),
            (
                "hostAliases",
                json!([{"ip":"1.1.1.1","hostnames":["a"]}]),
                json!([{"ip":"1.1.1.1","hostnames":["b"]}]),
                json!([{"ip":"1.1.1.1","hostnames":["b"]}]),
            ),
            // Lists without a strategy are replaced.
            (
                "tolerations",
                json!([{"key":"a"},{"key":"b"}]),
                json!([{"key":"c"}]),
                json!([{"key":"c"}]),
            ),
            ("args", json!(["a", "b"]), json!(["c"]), json!(["c"])),
            // Primitive merge of finalizers: union, new values first as upstream orders them.
            (
                "finalizers",
                json!(["a", "b"]),
                json!(["b", "c"]),
                json!(["a", "b", "c"]),
            ),
            ("finalizers", json!(["a"]), json!(["c"]), json!(["c", "a"])),
        ];
        for (field, live, patch, want) in cases {
            let got = smp(json!({ field: live }), json!({ field: patch }));
            assert_eq!(got, json!({ field: want }), "{field}: {patch}");
        }
    }

    #[test]
    fn smp_maps_nulls_and_map_directives() {
        let live = json!({"metadata":{"labels":{"a":"1","b":"2"},"annotations":{"x":"y"}},"spec":{"replicas":1}});
        let got = smp(
            live.clone(),
            json!({"metadata":{"labels":{"a":null,"c":"3"}},"spec":{"replicas":2}}),
        );
        assert_eq!(
            got,
            json!({"metadata":{"labels":{"b":"2","c":"3"},"annotations":{"x":"y"}},"spec":{"replicas":2}})
        );
        let got = smp(
            live.clone(),
            json!({"metadata":{"labels":{"$patch":"replace","z":"9"}}}),
        );
        assert_eq!(got["metadata"]["labels"], json!({"z":"9"}));
        let got = smp(
            live.clone(),
            json!({"metadata":{"annotations":{"$patch":"delete"}}}),
        );
        assert_eq!(got["metadata"]["annotations"], json!({}));
        // Nulls and directives inside a newly added value never reach the result.
        let got = smp(
            live,
            json!({"spec":{"strategy":{"type":"Recreate","rollingUpdate":null,"$retainKeys":["type"]}}}),
        );
        assert_eq!(got["spec"]["strategy"], json!({"type":"Recreate"}));
    }

    #[test]
    fn smp_retain_keys_as_kubectl_sends_it() {
        // kubectl apply switching a Deployment strategy to Recreate.
        let live =
            json!({"spec":{"strategy":{"type":"RollingUpdate","rollingUpdate":{"maxSurge":1}}}});
        let got = smp(
            live,
            json!({"spec":{"strategy":{"$retainKeys":["type"],"type":"Recreate"}}}),
        );
        assert_eq!(got, json!({"spec":{"strategy":{"type":"Recreate"}}}));
        let mut t = json!({"a": {"x": 1}});
        let e =
            strategic_merge_patch(&mut t, &json!({"a":{"$retainKeys":["x"],"y":2}})).unwrap_err();
        assert!(matches!(e, PatchError::Invalid(_)));
        assert_eq!(t, json!({"a": {"x": 1}}), "atomic on error");
    }

    #[test]
    fn smp_set_element_order_is_honoured_and_removed() {
        let live = pod(json!([{"name":"a","image":"a:1"},{"name":"b","image":"b:1"}]));
        // kubectl apply adding container c between a and b.
        let patch = json!({"spec":{"template":{"spec":{
            "$setElementOrder/containers":[{"name":"a"},{"name":"c"},{"name":"b"}],
            "containers":[{"name":"c","image":"c:1"}]}}}});
        let got = smp(live.clone(), patch);
        assert_eq!(
            got,
            pod(
                json!([{"name":"a","image":"a:1"},{"name":"c","image":"c:1"},{"name":"b","image":"b:1"}])
            )
        );
        // Reordering only.
        let patch = json!({"spec":{"template":{"spec":{"$setElementOrder/containers":[{"name":"b"},{"name":"a"}]}}}});
        let got = smp(live.clone(), patch);
        assert_eq!(
            got,
            pod(json!([{"name":"b","image":"b:1"},{"name":"a","image":"a:1"}]))
        );
        // Deleting b as kubectl apply does (delete directive + order list).
        let patch = json!({"spec":{"template":{"spec":{
            "$setElementOrder/containers":[{"name":"a"}],
            "containers":[{"$patch":"delete","name":"b"}]}}}});
        let got = smp(live, patch);
        assert_eq!(got, pod(json!([{"name":"a","image":"a:1"}])));
        // Primitive list order.
        let got = smp(
            json!({"metadata":{"finalizers":["x","y"]}}),
            json!({"metadata":{"$setElementOrder/finalizers":["y","z","x"],"finalizers":["z"]}}),
        );
        assert_eq!(got, json!({"metadata":{"finalizers":["y","z","x"]}}));
    }

    #[test]
    fn smp_kubectl_apply_three_way_patch() {
        // The shape kubectl apply sends after a container's env, ports and image changed in the file.
        let live = pod(json!([{"name": "podinfod", "image": "podinfo:1",
            "env": [{"name": "A", "value": "1"}, {"name": "OLD", "value": "x"}],
            "ports": [{"containerPort": 9898, "name": "http", "protocol": "TCP"}],
            "resources": {"limits": {"cpu": "1"}}}]));
        let patch = json!({"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "podinfod"}],
        "containers": [{
            "$setElementOrder/env": [{"name": "A"}, {"name": "B"}],
            "$setElementOrder/ports": [{"containerPort": 9898}, {"containerPort": 9797}],
            "env": [{"name": "B", "value": "2"}, {"$patch": "delete", "name": "OLD"}],
            "image": "podinfo:2",
            "name": "podinfod",
            "ports": [{"containerPort": 9797, "name": "metrics"}],
            "resources": {"limits": {"cpu": null, "memory": "64Mi"}}
        }]}}}});
        let got = smp(live, patch);
        assert_eq!(
            got,
            pod(json!([{"name": "podinfod", "image": "podinfo:2",
            "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
            "ports": [{"containerPort": 9898, "name": "http", "protocol": "TCP"}, {"containerPort": 9797, "name": "metrics"}],
            "resources": {"limits": {"memory": "64Mi"}}}]))
        );
    }

    #[test]
    fn smp_delete_from_primitive_list() {
        let got = smp(
            json!({"metadata":{"finalizers":["a","b","c"]}}),
            json!({"metadata":{"$deleteFromPrimitiveList/finalizers":["b"]}}),
        );
        assert_eq!(got, json!({"metadata":{"finalizers":["a","c"]}}));
    }

    #[test]
    fn smp_errors_are_invalid_and_atomic() {
        let live = pod(json!([{"name":"a"}]));
        for patch in [
            json!([1]),
            pod(json!([{"image":"no-name"}])),
            pod(json!([{"$patch":"delete"}])),
            pod(json!([{"$patch":"merge"}])),
            json!({"spec":{"$patch":"explode"}}),
            json!({"spec":{"$unknown":1}}),
            json!({"$setElementOrder/x": 1}),
        ] {
            let mut t = live.clone();
            let e = strategic_merge_patch(&mut t, &patch).expect_err(&patch.to_string());
            assert!(matches!(e, PatchError::Invalid(_)), "{patch}: {e:?}");
            assert_eq!(t, live, "{patch}");
        }
    }

    #[test]
    fn apply_creates_and_merges() {
        let mut t = Value::Null;
        apply_patch(
            &mut t,
            &json!({"apiVersion":"v1","kind":"ConfigMap","data":{"a":"1"}}),
        )
        .unwrap();
        assert_eq!(
            t,
            json!({"apiVersion":"v1","kind":"ConfigMap","data":{"a":"1"}})
        );
        apply_patch(&mut t, &json!({"data":{"b":"2"}})).unwrap();
        assert_eq!(t["data"], json!({"a":"1","b":"2"}));
        let mut d = pod(json!([{"name":"a","image":"a:1"}]));
        apply_patch(
            &mut d,
            &pod(json!([{"name":"b","image":"b:1"},{"name":"a","image":"a:2"}])),
        )
        .unwrap();
        assert_eq!(
            d,
            pod(json!([{"name":"a","image":"a:2"},{"name":"b","image":"b:1"}]))
        );
        assert!(matches!(
            apply_patch(&mut d, &json!("x")),
            Err(PatchError::Invalid(_))
        ));
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (-5i64..5).prop_map(|n| json!(n)),
            "[a-c]{0,2}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("name".to_string()),
                        Just("containers".to_string()),
                        Just("ports".to_string()),
                        Just("finalizers".to_string()),
                        Just("$patch".to_string()),
                        Just("$retainKeys".to_string()),
                        Just("$setElementOrder/containers".to_string()),
                        "[a-c]".prop_map(String::from),
                    ],
                    inner,
                    0..4
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Objects of objects and scalars, without lists or `$` directives.
    fn arb_list_free_object() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (-5i64..5).prop_map(|n| json!(n)),
            "[a-c]{0,2}".prop_map(Value::String),
        ];
        let key = prop_oneof![
            Just("name".to_string()),
            Just("containers".to_string()),
            "[a-c]".prop_map(String::from)
        ];
        let map = move |inner: BoxedStrategy<Value>| {
            prop::collection::btree_map(key.clone(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect()))
        };
        let tree = leaf.prop_recursive(4, 32, 4, {
            let map = map.clone();
            move |inner| map(inner.boxed())
        });
        map(tree.boxed())
    }

    fn arb_pointer() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop_oneof![
                Just("-".to_string()),
                "[a-c0-2~]{0,2}".prop_map(String::from)
            ],
            0..3,
        )
        .prop_map(|toks| toks.iter().map(|t| format!("/{t}")).collect())
    }

    fn arb_json_patch() -> impl Strategy<Value = Value> {
        let op = (
            prop_oneof![Just("add"), Just("remove"), Just("replace"), Just("move"), Just("copy"), Just("test"), Just("bad")],
            arb_pointer(),
            arb_pointer(),
            arb_json(),
        )
            .prop_map(|(op, path, from, value)| json!({"op": op, "path": path, "from": from, "value": value}));
        prop::collection::vec(op, 0..5).prop_map(Value::Array)
    }

    proptest! {
        #[test]
        fn merge_patch_is_idempotent(target in arb_json(), patch in arb_json()) {
            let mut once = target.clone();
            merge_patch(&mut once, &patch);
            let mut twice = once.clone();
            merge_patch(&mut twice, &patch);
            prop_assert_eq!(once, twice);
        }

        #[test]
        fn json_patch_is_atomic(target in arb_json(), patch in arb_json_patch()) {
            let mut t = target.clone();
            if json_patch(&mut t, &patch).is_err() {
                prop_assert_eq!(t, target);
            }
        }

        #[test]
        fn strategic_and_apply_never_panic_and_strip_directives(target in arb_json(), patch in arb_json()) {
            let mut t = target.clone();
            match strategic_merge_patch(&mut t, &patch) {
                Ok(()) => {
                    let text = t.to_string();
                    // Directives in the patch never end up in the result (the target may carry its own).
                    if !target.to_string().contains('$') {
                        prop_assert!(!text.contains("\"$"), "{} + {} = {}", target, patch, text);
                    }
                }
                Err(_) => prop_assert_eq!(&t, &target),
            }
            let mut a = target.clone();
            let _ = apply_patch(&mut a, &patch);
        }

        #[test]
        fn strategic_equals_merge_patch_without_lists_or_directives(
            target in arb_json(),
            patch in arb_list_free_object(),
        ) {
            // With only maps and scalars, strategic merge patch is plain JSON merge patch.
            let mut merged = target.clone();
            merge_patch(&mut merged, &patch);
            let mut strategic = target.clone();
            strategic_merge_patch(&mut strategic, &patch).unwrap();
            prop_assert_eq!(strategic, merged);
        }

        #[test]
        fn random_bodies_never_panic(target in arb_json(), patch in arb_json()) {
            let mut t = target.clone();
            let _ = json_patch(&mut t, &patch);
        }
    }
}
