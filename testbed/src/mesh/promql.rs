//! Instant-query PromQL evaluation over the mesh's [`Tsdb`], with Prometheus 2.x semantics for the
//! subset the operator needs: vector and range selectors (all four matchers, `offset`), `rate`,
//! `irate`, `increase`, `vector`, `histogram_quantile`, `sum`/`avg`/`min`/`max`/`count` with
//! `by`/`without`, scalar literals, unary minus, arithmetic and comparison between scalars and
//! vectors, and one-to-one vector matching with `on`/`ignoring`.
//!
//! Everything else is rejected before evaluation with [`QueryError::Unsupported`] naming the
//! construct, so the testbed never answers a query it would get wrong. Window boundaries follow
//! Prometheus 2.x (the version CI compares against): selectors include samples at exactly
//! `t - range` / `t - 5m`.
use std::collections::HashMap;
use std::time::Duration;

use promql_parser::label::{MatchOp, Matcher};
use promql_parser::parser::{
    self, AggregateExpr, BinaryExpr, Call, Expr, LabelModifier, Offset, VectorMatchCardinality,
    VectorSelector,
};

use super::tsdb::{Labels, Tsdb};

/// How far back an instant vector selector looks for the latest sample.
pub const LOOKBACK_MS: i64 = 5 * 60 * 1000;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum QueryError {
    /// The query does not parse (Prometheus: `bad_data`).
    #[error("parse error: {0}")]
    Parse(String),
    /// Valid PromQL the testbed does not evaluate (answered as `bad_data`).
    #[error("query not supported by the testbed's Prometheus API; unsupported: {0}")]
    Unsupported(String),
    /// Well-typed query that fails at evaluation (Prometheus: `execution`).
    #[error("{0}")]
    Execution(String),
}

/// One element of an instant vector.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub labels: Labels,
    pub value: f64,
}

/// The value of an evaluated expression.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Scalar(f64),
    String(String),
    Vector(Vec<Sample>),
    Matrix(Vec<(Labels, Vec<(i64, f64)>)>),
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::Scalar(_) => "scalar",
            Value::String(_) => "string",
            Value::Vector(_) => "vector",
            Value::Matrix(_) => "matrix",
        }
    }
}

/// Parses a query and checks every construct in it is supported.
pub fn parse(query: &str) -> Result<Expr, QueryError> {
    // The parser is third-party code fed with user input: a panic in it must not take the
    // testbed down, so it becomes a parse error.
    let parsed = std::panic::catch_unwind(|| parser::parse(query))
        .map_err(|_| QueryError::Parse("the PromQL parser failed on this input".into()))?;
    let expr = parsed.map_err(QueryError::Parse)?;
    check_supported(&expr)?;
    Ok(expr)
}

/// Parses and evaluates `query` at `t_ms` (milliseconds since the epoch). Vector results are
/// sorted by labels so answers are deterministic.
pub fn query(db: &Tsdb, query: &str, t_ms: i64) -> Result<Value, QueryError> {
    let expr = parse(query)?;
    let mut v = Evaluator { db, t: t_ms }.eval(&expr)?;
    match &mut v {
        Value::Vector(s) => s.sort_by(|a, b| a.labels.cmp(&b.labels)),
        Value::Matrix(m) => m.sort_by(|a, b| a.0.cmp(&b.0)),
        _ => {}
    }
    Ok(v)
}

const AGGREGATIONS: &[&str] = &["sum", "avg", "min", "max", "count"];
const FUNCTIONS: &[&str] = &["rate", "irate", "increase", "vector", "histogram_quantile"];
const ARITHMETIC: &[&str] = &["+", "-", "*", "/", "%", "^"];
const COMPARISON: &[&str] = &["==", "!=", ">", "<", ">=", "<="];

fn unsupported<T>(what: impl Into<String>) -> Result<T, QueryError> {
    Err(QueryError::Unsupported(what.into()))
}

fn check_selector(vs: &VectorSelector) -> Result<(), QueryError> {
    if vs.at.is_some() {
        return unsupported("@ modifier");
    }
    if !vs.matchers.or_matchers.is_empty() {
        return unsupported("'or' in label matchers");
    }
    Ok(())
}

/// Walks the whole tree first so an unsupported construct is reported even where evaluation
/// would not reach it (e.g. on an empty side of a binary operation).
pub fn check_supported(e: &Expr) -> Result<(), QueryError> {
    match e {
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) => Ok(()),
        Expr::Paren(p) => check_supported(&p.expr),
        Expr::Unary(u) => check_supported(&u.expr),
        Expr::VectorSelector(vs) => check_selector(vs),
        Expr::MatrixSelector(ms) => check_selector(&ms.vs),
        Expr::Subquery(_) => unsupported("subquery"),
        Expr::Extension(_) => unsupported("extension expression"),
        Expr::Aggregate(a) => {
            let op = a.op.to_string();
            if !AGGREGATIONS.contains(&op.as_str()) {
                return unsupported(format!("aggregation {op}"));
            }
            if let Some(p) = &a.param {
                check_supported(p)?;
            }
            check_supported(&a.expr)
        }
        Expr::Call(c) => {
            let name = c.func.name;
            if !FUNCTIONS.contains(&name) {
                return unsupported(format!("function {name}()"));
            }
            for arg in &c.args.args {
                check_supported(arg)?;
            }
            Ok(())
        }
        Expr::Binary(b) => {
            let op = b.op.to_string();
            if !ARITHMETIC.contains(&op.as_str()) && !COMPARISON.contains(&op.as_str()) {
                return unsupported(format!("binary operator {op}"));
            }
            if let Some(m) = &b.modifier {
                match &m.card {
                    VectorMatchCardinality::OneToOne => {}
                    VectorMatchCardinality::ManyToOne(_) => return unsupported("group_left"),
                    VectorMatchCardinality::OneToMany(_) => return unsupported("group_right"),
                    VectorMatchCardinality::ManyToMany => {
                        return unsupported("many-to-many matching");
                    }
                }
                if m.fill_values.lhs.is_some() || m.fill_values.rhs.is_some() {
                    return unsupported("fill modifier");
                }
            }
            check_supported(&b.lhs)?;
            check_supported(&b.rhs)
        }
    }
}

struct Evaluator<'a> {
    db: &'a Tsdb,
    t: i64,
}

fn offset_ms(o: &Option<Offset>) -> i64 {
    let ms = |d: &Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    match o {
        None => 0,
        Some(Offset::Pos(d)) => ms(d),
        Some(Offset::Neg(d)) => -ms(d),
    }
}

fn matcher_ok(m: &Matcher, labels: &Labels) -> bool {
    m.is_match(labels.get(&m.name))
}

/// Label pairs every selected series must have: the metric name, equality matchers and regex
/// matchers whose pattern is a plain literal (Flagger's `destination_workload=~"podinfo"`), so
/// the store can start from its smallest posting list.
fn hints(vs: &VectorSelector) -> Vec<(&str, &str)> {
    let literal = |v: &str| {
        v.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    let mut out: Vec<(&str, &str)> = vs.name.iter().map(|n| ("__name__", n.as_str())).collect();
    for m in &vs.matchers.matchers {
        let exact = match m.op {
            MatchOp::Equal => true,
            MatchOp::Re(_) => literal(&m.value),
            _ => false,
        };
        if exact && !m.value.is_empty() {
            out.push((m.name.as_str(), m.value.as_str()));
        }
    }
    out
}

fn drop_name(mut v: Vec<Sample>) -> Vec<Sample> {
    for s in &mut v {
        s.labels = s.labels.without_name();
    }
    v
}

fn labels_string(l: &Labels) -> String {
    let inner: Vec<String> = l
        .iter()
        .map(|(k, v)| format!("{k}={}", serde_json::Value::String(v.to_string())))
        .collect();
    format!("{{{}}}", inner.join(", "))
}

/// Prometheus refuses vectors in which two elements have the same labels (e.g. `rate()` over
/// two metric names whose other labels coincide).
fn check_unique(v: &[Sample]) -> Result<(), QueryError> {
    let mut seen: Vec<&Labels> = v.iter().map(|s| &s.labels).collect();
    seen.sort();
    for w in seen.windows(2) {
        if w[0] == w[1] {
            return Err(QueryError::Execution(
                "vector cannot contain metrics with the same labelset".into(),
            ));
        }
    }
    Ok(())
}

impl Evaluator<'_> {
    fn eval(&self, e: &Expr) -> Result<Value, QueryError> {
        match e {
            Expr::NumberLiteral(n) => Ok(Value::Scalar(n.val)),
            Expr::StringLiteral(s) => Ok(Value::String(s.val.clone())),
            Expr::Paren(p) => self.eval(&p.expr),
            Expr::Unary(u) => match self.eval(&u.expr)? {
                Value::Scalar(v) => Ok(Value::Scalar(-v)),
                Value::Vector(v) => {
                    let mut v = drop_name(v);
                    for s in &mut v {
                        s.value = -s.value;
                    }
                    check_unique(&v)?;
                    Ok(Value::Vector(v))
                }
                other => Err(type_error("unary minus", &other)),
            },
            Expr::VectorSelector(vs) => Ok(Value::Vector(self.instant(vs))),
            Expr::MatrixSelector(ms) => {
                let range = i64::try_from(ms.range.as_millis()).unwrap_or(i64::MAX);
                Ok(Value::Matrix(self.range(&ms.vs, range)))
            }
            Expr::Call(c) => self.call(c),
            Expr::Aggregate(a) => self.aggregate(a),
            Expr::Binary(b) => self.binary(b),
            Expr::Subquery(_) => unsupported("subquery"),
            Expr::Extension(_) => unsupported("extension expression"),
        }
    }

    fn select(&self, vs: &VectorSelector, mint: i64, maxt: i64) -> super::tsdb::Selected {
        self.db.select(&hints(vs), mint, maxt, |l| {
            vs.name.as_deref().is_none_or(|n| l.get("__name__") == n)
                && vs.matchers.matchers.iter().all(|m| matcher_ok(m, l))
        })
    }

    fn instant(&self, vs: &VectorSelector) -> Vec<Sample> {
        let t = self.t.saturating_sub(offset_ms(&vs.offset));
        self.select(vs, t.saturating_sub(LOOKBACK_MS), t)
            .into_iter()
            .filter_map(|(labels, samples)| {
                samples.last().map(|&(_, value)| Sample { labels, value })
            })
            .collect()
    }

    fn range(&self, vs: &VectorSelector, range: i64) -> Vec<(Labels, Vec<(i64, f64)>)> {
        let t = self.t.saturating_sub(offset_ms(&vs.offset));
        self.select(vs, t.saturating_sub(range), t)
    }

    fn call(&self, c: &Call) -> Result<Value, QueryError> {
        let name = c.func.name;
        let arg = |i: usize| -> Result<&Expr, QueryError> {
            c.args
                .args
                .get(i)
                .map(|b| &**b)
                .ok_or_else(|| QueryError::Parse(format!("missing argument {i} of {name}()")))
        };
        match name {
            "rate" | "irate" | "increase" => {
                let Expr::MatrixSelector(ms) = arg(0)? else {
                    return unsupported(format!("{name}() of anything but a range selector"));
                };
                let range = i64::try_from(ms.range.as_millis()).unwrap_or(i64::MAX);
                let end = self.t.saturating_sub(offset_ms(&ms.vs.offset));
                let start = end.saturating_sub(range);
                let mut out = Vec::new();
                for (labels, samples) in self.select(&ms.vs, start, end) {
                    let v = if name == "irate" {
                        instant_rate(&samples)
                    } else {
                        extrapolated_rate(&samples, start, end, range, name == "rate")
                    };
                    if let Some(value) = v {
                        out.push(Sample {
                            labels: labels.without_name(),
                            value,
                        });
                    }
                }
                check_unique(&out)?;
                Ok(Value::Vector(out))
            }
            "vector" => match self.eval(arg(0)?)? {
                Value::Scalar(value) => Ok(Value::Vector(vec![Sample {
                    labels: Labels::default(),
                    value,
                }])),
                other => Err(type_error("vector()", &other)),
            },
            "histogram_quantile" => {
                let q = match self.eval(arg(0)?)? {
                    Value::Scalar(q) => q,
                    other => return Err(type_error("histogram_quantile() quantile", &other)),
                };
                let input = match self.eval(arg(1)?)? {
                    Value::Vector(v) => v,
                    other => return Err(type_error("histogram_quantile() buckets", &other)),
                };
                // Group by all labels but `le` (Prometheus keys on the name too, then drops it).
                let mut groups: HashMap<Labels, Vec<(f64, f64)>> = HashMap::new();
                for s in input {
                    let Ok(upper) = parse_go_float(s.labels.get("le")) else {
                        continue;
                    };
                    groups
                        .entry(s.labels.filtered(|k| k != "le"))
                        .or_default()
                        .push((upper, s.value));
                }
                let out: Vec<Sample> = groups
                    .into_iter()
                    .map(|(labels, buckets)| Sample {
                        labels: labels.without_name(),
                        value: bucket_quantile(q, buckets),
                    })
                    .collect();
                check_unique(&out)?;
                Ok(Value::Vector(out))
            }
            other => unsupported(format!("function {other}()")),
        }
    }

    fn aggregate(&self, a: &AggregateExpr) -> Result<Value, QueryError> {
        let op = a.op.to_string();
        let input = match self.eval(&a.expr)? {
            Value::Vector(v) => v,
            other => return Err(type_error(&format!("{op}()"), &other)),
        };
        struct Group {
            value: f64,
            count: usize,
        }
        let mut groups: HashMap<Labels, Group> = HashMap::new();
        let mut order: Vec<Labels> = Vec::new();
        for s in input {
            let key = match &a.modifier {
                None => Labels::default(),
                Some(LabelModifier::Include(by)) => {
                    s.labels.filtered(|k| by.labels.iter().any(|l| l == k))
                }
                Some(LabelModifier::Exclude(without)) => s
                    .labels
                    .filtered(|k| k != "__name__" && !without.labels.iter().any(|l| l == k)),
            };
            match groups.get_mut(&key) {
                None => {
                    order.push(key.clone());
                    groups.insert(
                        key,
                        Group {
                            value: s.value,
                            count: 1,
                        },
                    );
                }
                Some(g) => {
                    g.count += 1;
                    let v = s.value;
                    match op.as_str() {
                        "sum" => g.value += v,
                        "min" => {
                            if g.value > v || g.value.is_nan() {
                                g.value = v;
                            }
                        }
                        "max" => {
                            if g.value < v || g.value.is_nan() {
                                g.value = v;
                            }
                        }
                        "avg" => {
                            // Prometheus 2.x's incremental mean (avoids overflow), incl. its
                            // special cases for an infinite running mean.
                            let n = g.count as f64;
                            if g.value.is_infinite()
                                && ((v.is_infinite() && (g.value > 0.0) == (v > 0.0))
                                    || (!v.is_infinite() && !v.is_nan()))
                            {
                                continue;
                            }
                            g.value += v / n - g.value / n;
                        }
                        "count" => {}
                        other => return unsupported(format!("aggregation {other}")),
                    }
                }
            }
        }
        let out = order
            .into_iter()
            .filter_map(|labels| {
                let g = groups.remove(&labels)?;
                let value = if op == "count" {
                    g.count as f64
                } else {
                    g.value
                };
                Some(Sample { labels, value })
            })
            .collect();
        Ok(Value::Vector(out))
    }

    fn binary(&self, b: &BinaryExpr) -> Result<Value, QueryError> {
        let op = b.op.to_string();
        let is_cmp = COMPARISON.contains(&op.as_str());
        let return_bool = b.modifier.as_ref().is_some_and(|m| m.return_bool);
        let lhs = self.eval(&b.lhs)?;
        let rhs = self.eval(&b.rhs)?;
        match (lhs, rhs) {
            (Value::Scalar(l), Value::Scalar(r)) => {
                let (v, keep) = elem_binop(&op, l, r)?;
                if is_cmp {
                    if !return_bool {
                        return Err(QueryError::Parse(
                            "comparisons between scalars must use BOOL modifier".into(),
                        ));
                    }
                    return Ok(Value::Scalar(if keep { 1.0 } else { 0.0 }));
                }
                Ok(Value::Scalar(v))
            }
            (Value::Vector(v), Value::Scalar(s)) => {
                self.vector_scalar(&op, is_cmp, return_bool, v, s, false)
            }
            (Value::Scalar(s), Value::Vector(v)) => {
                self.vector_scalar(&op, is_cmp, return_bool, v, s, true)
            }
            (Value::Vector(l), Value::Vector(r)) => {
                let matching = b.modifier.as_ref().and_then(|m| m.matching.clone());
                vector_binop(&op, is_cmp, return_bool, l, r, matching.as_ref())
            }
            (l, r) => Err(QueryError::Parse(format!(
                "binary expression must contain only scalar and instant vector types, got {} {op} {}",
                l.kind(),
                r.kind()
            ))),
        }
    }

    fn vector_scalar(
        &self,
        op: &str,
        is_cmp: bool,
        return_bool: bool,
        v: Vec<Sample>,
        s: f64,
        swap: bool,
    ) -> Result<Value, QueryError> {
        let mut out = Vec::with_capacity(v.len());
        for mut e in v {
            let (l, r) = if swap { (s, e.value) } else { (e.value, s) };
            let (mut value, mut keep) = elem_binop(op, l, r)?;
            // A comparison keeps the vector element's value even when the scalar is on the left.
            if is_cmp && swap {
                value = r;
            }
            if return_bool {
                value = if keep { 1.0 } else { 0.0 };
                keep = true;
            }
            if keep {
                if !is_cmp || return_bool {
                    e.labels = e.labels.without_name();
                }
                e.value = value;
                out.push(e);
            }
        }
        check_unique(&out)?;
        Ok(Value::Vector(out))
    }
}

fn type_error(what: &str, got: &Value) -> QueryError {
    QueryError::Parse(format!(
        "{what}: unexpected argument of type {}",
        got.kind()
    ))
}

/// Go's `strconv.ParseFloat` for `le` values ("+Inf", "0.5", "1e3").
fn parse_go_float(s: &str) -> Result<f64, std::num::ParseFloatError> {
    s.trim_start_matches('+')
        .parse::<f64>()
        .or_else(|e| match s {
            "+Inf" | "Inf" | "+inf" | "inf" => Ok(f64::INFINITY),
            _ => Err(e),
        })
}

/// `(value, keep)` for one pair of operands; comparisons keep the left value.
fn elem_binop(op: &str, l: f64, r: f64) -> Result<(f64, bool), QueryError> {
    Ok(match op {
        "+" => (l + r, true),
        "-" => (l - r, true),
        "*" => (l * r, true),
        "/" => (l / r, true),
        "%" => (l % r, true),
        "^" => (l.powf(r), true),
        "==" => (l, l == r),
        "!=" => (l, l != r),
        ">" => (l, l > r),
        "<" => (l, l < r),
        ">=" => (l, l >= r),
        "<=" => (l, l <= r),
        other => return unsupported(format!("binary operator {other}")),
    })
}

fn vector_binop(
    op: &str,
    is_cmp: bool,
    return_bool: bool,
    lhs: Vec<Sample>,
    rhs: Vec<Sample>,
    matching: Option<&LabelModifier>,
) -> Result<Value, QueryError> {
    let signature = |l: &Labels| -> Labels {
        match matching {
            Some(LabelModifier::Include(on)) => l.filtered(|k| on.labels.iter().any(|x| x == k)),
            Some(LabelModifier::Exclude(ign)) => {
                l.filtered(|k| k != "__name__" && !ign.labels.iter().any(|x| x == k))
            }
            None => l.without_name(),
        }
    };
    let mut right: HashMap<Labels, Sample> = HashMap::new();
    for r in rhs {
        let sig = signature(&r.labels);
        if let Some(dup) = right.get(&sig) {
            return Err(QueryError::Execution(format!(
                "found duplicate series for the match group {} on the right hand-side of the operation: [{}, {}];many-to-many matching not allowed: matching labels must be unique on one side",
                labels_string(&sig),
                labels_string(&r.labels),
                labels_string(&dup.labels)
            )));
        }
        right.insert(sig, r);
    }
    let mut matched: HashMap<Labels, ()> = HashMap::new();
    let mut out = Vec::new();
    for l in lhs {
        let sig = signature(&l.labels);
        let Some(r) = right.get(&sig) else { continue };
        let (mut value, keep) = elem_binop(op, l.value, r.value)?;
        if return_bool {
            value = if keep { 1.0 } else { 0.0 };
        } else if !keep {
            continue;
        }
        let mut labels = l.labels.clone();
        if !is_cmp || return_bool {
            labels = labels.without_name();
        }
        labels = match matching {
            Some(LabelModifier::Include(on)) => {
                labels.filtered(|k| on.labels.iter().any(|x| x == k))
            }
            Some(LabelModifier::Exclude(ign)) => {
                labels.filtered(|k| !ign.labels.iter().any(|x| x == k))
            }
            None => labels,
        };
        if matched.insert(sig, ()).is_some() {
            return Err(QueryError::Execution(
                "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)".into(),
            ));
        }
        out.push(Sample { labels, value });
    }
    check_unique(&out)?;
    Ok(Value::Vector(out))
}

/// Prometheus's `extrapolatedRate` for counters: increase between the first and last sample in
/// the window (compensating counter resets), extrapolated to the window edges when the samples
/// reach close to them (within 1.1 average intervals), never below a zero counter value.
fn extrapolated_rate(
    samples: &[(i64, f64)],
    range_start: i64,
    range_end: i64,
    range_ms: i64,
    is_rate: bool,
) -> Option<f64> {
    if samples.len() < 2 {
        return None;
    }
    let (first_t, first_v) = samples[0];
    let (last_t, last_v) = samples[samples.len() - 1];
    let mut result = last_v - first_v;
    let mut prev = 0.0;
    for &(_, v) in samples {
        if v < prev {
            result += prev;
        }
        prev = v;
    }
    let mut to_start = first_t.saturating_sub(range_start) as f64 / 1000.0;
    let to_end = range_end.saturating_sub(last_t) as f64 / 1000.0;
    let sampled = (last_t - first_t) as f64 / 1000.0;
    let avg_between = sampled / (samples.len() - 1) as f64;
    if result > 0.0 && first_v >= 0.0 {
        let to_zero = sampled * (first_v / result);
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    let threshold = avg_between * 1.1;
    let mut extrapolate_to = sampled;
    extrapolate_to += if to_start < threshold {
        to_start
    } else {
        avg_between / 2.0
    };
    extrapolate_to += if to_end < threshold {
        to_end
    } else {
        avg_between / 2.0
    };
    result *= extrapolate_to / sampled;
    if is_rate {
        result /= range_ms as f64 / 1000.0;
    }
    Some(result)
}

/// Prometheus's `irate`: per-second rate between the last two samples (a drop is a reset).
fn instant_rate(samples: &[(i64, f64)]) -> Option<f64> {
    if samples.len() < 2 {
        return None;
    }
    let (lt, lv) = samples[samples.len() - 1];
    let (pt, pv) = samples[samples.len() - 2];
    let v = if lv < pv { lv } else { lv - pv };
    let dt = lt - pt;
    if dt == 0 {
        return None;
    }
    Some(v / (dt as f64 / 1000.0))
}

/// Prometheus's `bucketQuantile` for classic histograms: linear interpolation inside the bucket
/// holding the rank; NaN without a `+Inf` bucket or observations; the highest finite bound when
/// the rank falls in the `+Inf` bucket.
fn bucket_quantile(q: f64, mut buckets: Vec<(f64, f64)>) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    if buckets.last().is_none_or(|b| b.0 != f64::INFINITY) {
        return f64::NAN;
    }
    // Coalesce equal bounds (summing counts), then force monotonic counts.
    let mut merged: Vec<(f64, f64)> = Vec::with_capacity(buckets.len());
    for (ub, c) in buckets {
        match merged.last_mut() {
            Some(last) if last.0 == ub => last.1 += c,
            _ => merged.push((ub, c)),
        }
    }
    let mut max = f64::NEG_INFINITY;
    for b in &mut merged {
        if b.1 > max {
            max = b.1;
        } else if b.1 < max {
            b.1 = max;
        }
    }
    if merged.len() < 2 {
        return f64::NAN;
    }
    let observations = merged[merged.len() - 1].1;
    if observations == 0.0 {
        return f64::NAN;
    }
    let mut rank = q * observations;
    let n = merged.len() - 1;
    let b = merged[..n].partition_point(|x| x.1 < rank);
    if b == n {
        return merged[n - 1].0;
    }
    if b == 0 && merged[0].0 <= 0.0 {
        return merged[0].0;
    }
    let mut start = 0.0;
    let end = merged[b].0;
    let mut count = merged[b].1;
    if b > 0 {
        start = merged[b - 1].0;
        count -= merged[b - 1].1;
        rank -= merged[b - 1].1;
    }
    start + (end - start) * (rank / count)
}

/// Formats a sample value like Prometheus's API (`strconv.FormatFloat(v, 'f', -1, 64)`).
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

/// Formats a millisecond timestamp as Prometheus's API does: seconds with up to three
/// (untrimmed) fraction digits, e.g. `1435781451.781`, `1435781451.100`, `1435781451`.
pub fn format_timestamp(t_ms: i64) -> String {
    let sign = if t_ms < 0 { "-" } else { "" };
    let t = t_ms.unsigned_abs();
    let (s, f) = (t / 1000, t % 1000);
    if f == 0 {
        format!("{sign}{s}")
    } else {
        format!("{sign}{s}.{f:03}")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const T0: i64 = 1_700_000_000_000;

    fn l(pairs: &[(&str, &str)]) -> Labels {
        Labels::from_pairs(pairs.iter().copied())
    }

    /// `http_total{code="200",job="a"}` grows 10/s, `{code="500",job="a"}` 1/s, `{code="200",
    /// job="b"}` 5/s; one sample every 10 s from T0-600s to T0 (inclusive), value = rate*(t-start).
    fn db() -> Tsdb {
        let mut db = Tsdb::new(Duration::from_secs(3600));
        let series = [
            (
                l(&[("__name__", "http_total"), ("code", "200"), ("job", "a")]),
                10.0,
            ),
            (
                l(&[("__name__", "http_total"), ("code", "500"), ("job", "a")]),
                1.0,
            ),
            (
                l(&[("__name__", "http_total"), ("code", "200"), ("job", "b")]),
                5.0,
            ),
        ];
        for i in 0..=60 {
            let t = T0 - 600_000 + i * 10_000;
            for (labels, rate) in &series {
                db.add(labels, t, rate * (i * 10) as f64);
            }
        }
        db
    }

    fn vec_of(db: &Tsdb, q: &str, t: i64) -> Vec<(Vec<(String, String)>, f64)> {
        match query(db, q, t).unwrap() {
            Value::Vector(v) => v
                .into_iter()
                .map(|s| {
                    (
                        s.labels
                            .iter()
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .collect(),
                        s.value,
                    )
                })
                .collect(),
            other => panic!("not a vector: {other:?}"),
        }
    }

    fn one(db: &Tsdb, q: &str) -> f64 {
        let v = vec_of(db, q, T0);
        assert_eq!(v.len(), 1, "{q}: {v:?}");
        v[0].1
    }

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-9 * b.abs().max(1.0), "{a} != {b}");
    }

    #[test]
    fn instant_selector_takes_latest_sample_within_lookback() {
        let db = db();
        close(one(&db, r#"http_total{job="b"}"#), 3000.0);
        // 5 s after the last sample: still the last value
        let v = vec_of(&db, r#"http_total{job="b"}"#, T0 + 5_000);
        assert_eq!(v[0].1, 3000.0);
        // exactly 5 min after: still visible (2.x includes the boundary); 1 ms later gone
        assert_eq!(
            vec_of(&db, r#"http_total{job="b"}"#, T0 + LOOKBACK_MS).len(),
            1
        );
        assert!(vec_of(&db, r#"http_total{job="b"}"#, T0 + LOOKBACK_MS + 1).is_empty());
        // between samples: the earlier one
        assert_eq!(
            vec_of(&db, r#"http_total{job="b"}"#, T0 - 5_000)[0].1,
            2950.0
        );
        // name is kept on selectors
        assert_eq!(
            vec_of(&db, r#"http_total{job="b"}"#, T0)[0].0[0].1,
            "http_total"
        );
    }

    #[test]
    fn all_four_matchers_anchored() {
        let db = db();
        assert_eq!(vec_of(&db, r#"http_total{code="200"}"#, T0).len(), 2);
        assert_eq!(vec_of(&db, r#"http_total{code!="200"}"#, T0).len(), 1);
        assert_eq!(vec_of(&db, r#"http_total{code=~"2.*"}"#, T0).len(), 2);
        // anchored: "0" does not match "200"
        assert_eq!(vec_of(&db, r#"http_total{code=~"0"}"#, T0).len(), 0);
        assert_eq!(vec_of(&db, r#"http_total{code!~"5.*"}"#, T0).len(), 2);
        assert_eq!(vec_of(&db, r#"{__name__=~"http_.*",job="a"}"#, T0).len(), 2);
        // missing label matches ""
        assert_eq!(vec_of(&db, r#"http_total{missing=""}"#, T0).len(), 3);
        assert_eq!(vec_of(&db, r#"http_total{missing!=""}"#, T0).len(), 0);
    }

    #[test]
    fn range_selector_returns_matrix_inclusive_window() {
        let db = db();
        let Value::Matrix(m) = query(&db, r#"http_total{job="b"}[30s]"#, T0).unwrap() else {
            panic!()
        };
        assert_eq!(m.len(), 1);
        let ts: Vec<i64> = m[0].1.iter().map(|s| s.0).collect();
        assert_eq!(ts, vec![T0 - 30_000, T0 - 20_000, T0 - 10_000, T0]);
    }

    #[test]
    fn rate_increase_with_full_extrapolation() {
        let db = db();
        // Samples at the window edges: 7 samples over 60 s, increase 300 → rate exactly 5.
        close(one(&db, r#"rate(http_total{job="b"}[1m])"#), 5.0);
        close(one(&db, r#"increase(http_total{job="b"}[1m])"#), 300.0);
        // Window ending 5 s after the last sample: samples T0-55..T0 (6 samples, 50 s apart
        // first/last), 5 s to each edge (< 1.1*10) → extrapolate 250 * 60/50 = 300.
        let v = vec_of(&db, r#"increase(http_total{job="b"}[1m])"#, T0 + 5_000);
        close(v[0].1, 300.0);
        // rate drops the metric name
        assert!(
            vec_of(&db, r#"rate(http_total{job="b"}[1m])"#, T0)[0]
                .0
                .iter()
                .all(|(k, _)| k != "__name__")
        );
    }

    #[test]
    fn rate_limits_extrapolation_and_handles_resets_and_zero_start() {
        let mut db = Tsdb::new(Duration::from_secs(3600));
        let s = l(&[("__name__", "c")]);
        // samples at 20 s, 30 s, 40 s into a 60 s window: 20 s gap at both edges > 1.1*10 s →
        // extrapolate only half an interval each side: 20 s sampled + 10 s = 30 s.
        db.add(&s, T0 - 40_000, 100.0);
        db.add(&s, T0 - 30_000, 110.0);
        db.add(&s, T0 - 20_000, 120.0);
        close(one(&db, "increase(c[1m])"), 20.0 * 30.0 / 20.0);
        // counter reset 120 → 5 adds 120 back:
        db.add(&s, T0 - 10_000, 5.0);
        db.add(&s, T0, 15.0);
        // samples now T0-40..T0: increase = 15-100+120 = 35; sampled 40 s, avg 10 s;
        // to_start 20 s > 11 s → +5 s; to_end 0 → 35 * 45/40
        close(one(&db, "increase(c[1m])"), 35.0 * 45.0 / 40.0);
        close(one(&db, "rate(c[1m])"), 35.0 * 45.0 / 40.0 / 60.0);
        // zero-point clamp: counter starting at 1 with slope 10/10s, window start 9 s before
        // the first sample: extrapolating would go below 0, so only 1 s (to zero) is added.
        let mut db = Tsdb::new(Duration::from_secs(3600));
        db.add(&s, T0 - 21_000, 1.0);
        db.add(&s, T0 - 11_000, 11.0);
        db.add(&s, T0 - 1_000, 21.0);
        // range 30 s: start T0-30, to_start 9 s (<11), to_zero = 20*(1/20)=1 s → 1 s;
        // to_end 1 s → 20 * (20+1+1)/20 = 22
        close(one(&db, "increase(c[30s])"), 22.0);
    }

    #[test]
    fn rate_needs_two_samples_irate_uses_last_two() {
        let mut db = Tsdb::new(Duration::from_secs(3600));
        let s = l(&[("__name__", "c")]);
        db.add(&s, T0 - 5_000, 3.0);
        assert!(vec_of(&db, "rate(c[1m])", T0).is_empty());
        db.add(&s, T0 - 4_000, 7.0);
        db.add(&s, T0 - 2_000, 27.0);
        close(one(&db, "irate(c[1m])"), 10.0);
        db.add(&s, T0 - 1_000, 4.0); // reset: irate takes the new value as the increase
        close(one(&db, "irate(c[1m])"), 4.0);
    }

    #[test]
    fn aggregations_by_and_without() {
        let db = db();
        close(one(&db, "sum(http_total)"), 6000.0 + 600.0 + 3000.0);
        close(one(&db, "count(http_total)"), 3.0);
        close(one(&db, "min(http_total)"), 600.0);
        close(one(&db, "max(http_total)"), 6000.0);
        close(one(&db, "avg(http_total)"), 9600.0 / 3.0);
        let by = vec_of(&db, "sum by (job) (rate(http_total[1m]))", T0);
        assert_eq!(by.len(), 2);
        assert_eq!(by[0].0, vec![("job".to_string(), "a".to_string())]);
        close(by[0].1, 11.0);
        close(by[1].1, 5.0);
        let without = vec_of(&db, "sum without (job) (http_total)", T0);
        assert_eq!(
            without.iter().map(|x| x.0.clone()).collect::<Vec<_>>(),
            vec![
                vec![("code".to_string(), "200".to_string())],
                vec![("code".to_string(), "500".to_string())]
            ]
        );
        close(without[0].1, 9000.0);
        // aggregating nothing yields nothing
        assert!(vec_of(&db, "sum(nothing)", T0).is_empty());
    }

    #[test]
    fn flagger_success_rate_query() {
        let db = db();
        let q = r#"sum(rate(http_total{job=~"a",code!~"5.*"}[1m])) / sum(rate(http_total{job=~"a"}[1m])) * 100"#;
        close(one(&db, q), 1000.0 / 11.0);
    }

    #[test]
    fn histogram_quantile_interpolates_and_nan_cases() {
        let mut db = Tsdb::new(Duration::from_secs(3600));
        let b = |le: &str| l(&[("__name__", "h_bucket"), ("le", le), ("w", "x")]);
        for (le, c) in [("10", 20.0), ("50", 80.0), ("100", 95.0), ("+Inf", 100.0)] {
            db.add(&b(le), T0, c);
        }
        // rank 50 in (10,50]: 10 + 40 * (50-20)/60 = 30
        close(one(&db, "histogram_quantile(0.5, h_bucket)"), 30.0);
        // rank 99 in +Inf bucket → highest finite bound
        close(one(&db, "histogram_quantile(0.99, h_bucket)"), 100.0);
        // rank 5 in the first bucket: interpolate from 0
        close(one(&db, "histogram_quantile(0.05, h_bucket)"), 2.5);
        let v = vec_of(&db, "histogram_quantile(0.5, h_bucket)", T0);
        assert_eq!(v[0].0, vec![("w".to_string(), "x".to_string())]);
        assert!(one(&db, "histogram_quantile(NaN, h_bucket)").is_nan());
        assert_eq!(
            one(&db, "histogram_quantile(-1, h_bucket)"),
            f64::NEG_INFINITY
        );
        assert_eq!(one(&db, "histogram_quantile(2, h_bucket)"), f64::INFINITY);
        // without a +Inf bucket: NaN
        assert!(one(&db, r#"histogram_quantile(0.5, h_bucket{le!="+Inf"})"#).is_nan());
        // no observations: NaN
        let mut db = Tsdb::new(Duration::from_secs(3600));
        for le in ["10", "+Inf"] {
            db.add(&b(le), T0, 0.0);
        }
        assert!(one(&db, "histogram_quantile(0.5, h_bucket)").is_nan());
        // non-monotonic counts are fixed up: le=10 → 5 but le=50 → 3 treated as 5
        let mut db = Tsdb::new(Duration::from_secs(3600));
        for (le, c) in [("10", 5.0), ("50", 3.0), ("+Inf", 10.0)] {
            db.add(&b(le), T0, c);
        }
        // rank 5 → first bucket with count >= 5 is le=10: 0 + 10 * 5/5 = 10
        close(one(&db, "histogram_quantile(0.5, h_bucket)"), 10.0);
    }

    #[test]
    fn scalars_vector_and_arithmetic() {
        let db = db();
        assert_eq!(query(&db, "1 + 2 * 3", T0).unwrap(), Value::Scalar(7.0));
        assert_eq!(query(&db, "2 ^ 3 ^ 2", T0).unwrap(), Value::Scalar(512.0));
        assert_eq!(query(&db, "-7 % 3", T0).unwrap(), Value::Scalar(-1.0));
        assert_eq!(
            query(&db, "(1 + 2) / 0", T0).unwrap(),
            Value::Scalar(f64::INFINITY)
        );
        assert_eq!(query(&db, "2 > bool 1", T0).unwrap(), Value::Scalar(1.0));
        assert_eq!(query(&db, "2 < bool 1", T0).unwrap(), Value::Scalar(0.0));
        let v = vec_of(&db, "vector(3) * 2", T0);
        assert_eq!(v, vec![(vec![], 6.0)]);
        let v = vec_of(&db, r#"-http_total{job="b"} + 1"#, T0);
        assert_eq!(v[0].1, -2999.0);
        assert!(v[0].0.iter().all(|(k, _)| k != "__name__"));
        let v = vec_of(&db, r#"10 - http_total{job="b"}"#, T0);
        assert_eq!(v[0].1, -2990.0);
        let Value::String(s) = query(&db, r#""hello""#, T0).unwrap() else {
            panic!()
        };
        assert_eq!(s, "hello");
    }

    #[test]
    fn comparisons_filter_or_return_bool() {
        let db = db();
        let v = vec_of(&db, "http_total > 1000", T0);
        assert_eq!(v.len(), 2);
        assert!(
            v.iter()
                .all(|(l, _)| l[0] == ("__name__".into(), "http_total".into()))
        );
        // scalar on the left: the vector value is kept
        let v = vec_of(&db, "1000 < http_total", T0);
        assert_eq!(
            v.iter().map(|x| x.1).collect::<Vec<_>>(),
            vec![6000.0, 3000.0]
        );
        let v = vec_of(&db, "http_total > bool 1000", T0);
        assert_eq!(
            v.iter().map(|x| x.1).collect::<Vec<_>>(),
            vec![1.0, 1.0, 0.0]
        );
        assert!(v[0].0.iter().all(|(k, _)| k != "__name__"));
        for (q, n) in [
            ("http_total == 600", 1),
            ("http_total != 600", 2),
            ("http_total >= 3000", 2),
            ("http_total <= 3000", 2),
            ("http_total < 3000", 1),
        ] {
            assert_eq!(vec_of(&db, q, T0).len(), n, "{q}");
        }
    }

    #[test]
    fn vector_matching_one_to_one() {
        let db = db();
        // default matching: all labels but the name
        let v = vec_of(&db, "http_total / http_total", T0);
        assert_eq!(v.len(), 3);
        assert!(v.iter().all(|x| x.1 == 1.0));
        // on(job): left side must be unique per job
        let v = vec_of(
            &db,
            r#"http_total{code="500"} / on(job) http_total{code="200"}"#,
            T0,
        );
        assert_eq!(v, vec![(vec![("job".into(), "a".into())], 0.1)]);
        // ignoring(code)
        let v = vec_of(
            &db,
            r#"http_total{code="500"} + ignoring(code) http_total{code="200"}"#,
            T0,
        );
        assert_eq!(v, vec![(vec![("job".into(), "a".into())], 6600.0)]);
        // comparison keeps the left name and value
        let v = vec_of(
            &db,
            r#"http_total{code="200"} > ignoring(code) http_total{code="500"}"#,
            T0,
        );
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].1, 6000.0);
        assert_eq!(v[0].0[0].1, "http_total");
        let v = vec_of(
            &db,
            r#"http_total{code="200"} < bool on(job) http_total{code="500"}"#,
            T0,
        );
        assert_eq!(v, vec![(vec![("job".into(), "a".into())], 0.0)]);
        // many-to-many → execution error
        let e = query(&db, r#"sum(http_total) / on() http_total"#, T0).unwrap_err();
        assert!(
            matches!(e, QueryError::Execution(ref m) if m.contains("many-to-many")),
            "{e}"
        );
        let e = query(&db, r#"http_total / on(job) sum by (job) (http_total)"#, T0).unwrap_err();
        assert!(
            matches!(e, QueryError::Execution(ref m) if m.contains("group_left")),
            "{e}"
        );
    }

    #[test]
    fn offset_shifts_evaluation_time() {
        let db = db();
        close(one(&db, r#"http_total{job="b"} offset 1m"#), 2700.0);
        close(
            one(&db, r#"increase(http_total{job="b"}[1m] offset 1m)"#),
            300.0,
        );
    }

    #[test]
    fn unsupported_constructs_are_named() {
        let db = db();
        for (q, what) in [
            ("abs(http_total)", "function abs()"),
            ("topk(2, http_total)", "aggregation topk"),
            ("http_total and http_total", "binary operator and"),
            ("http_total or vector(1)", "binary operator or"),
            (
                "http_total / on(job) group_left sum by (job) (http_total)",
                "group_left",
            ),
            ("rate(http_total[5m:1m])", "subquery"),
            ("http_total @ 100", "@ modifier"),
            ("stddev(http_total)", "aggregation stddev"),
            (
                "label_replace(http_total, \"a\", \"b\", \"c\", \"d\")",
                "function label_replace()",
            ),
        ] {
            let e = query(&db, q, T0).unwrap_err();
            assert_eq!(e, QueryError::Unsupported(what.into()), "{q}");
            assert!(e.to_string().ends_with(&format!("unsupported: {what}")));
        }
        assert!(matches!(query(&db, "sum(", T0), Err(QueryError::Parse(_))));
        assert!(matches!(query(&db, "", T0), Err(QueryError::Parse(_))));
    }

    #[test]
    fn value_and_timestamp_formatting() {
        assert_eq!(format_value(1.0), "1");
        assert_eq!(format_value(0.1), "0.1");
        assert_eq!(format_value(100.0 / 3.0), "33.333333333333336");
        assert_eq!(format_value(1e21), "1000000000000000000000");
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
        assert_eq!(format_timestamp(1_435_781_451_781), "1435781451.781");
        assert_eq!(format_timestamp(1_435_781_451_100), "1435781451.100");
        assert_eq!(format_timestamp(1_435_781_451_000), "1435781451");
        assert_eq!(format_timestamp(1_435_781_451_005), "1435781451.005");
    }
}
