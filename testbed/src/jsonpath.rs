//! The JSONPath subset of `additionalPrinterColumns[].jsonPath` (k8s.io/client-go/util/jsonpath):
//! `.a.b`, `['a.b']`/`["a"]`, `[0]`, `[-1]`, `[*]`, `.*`, `..name` (recursive descent) and simple
//! filters `[?(@.type=="Ready")]` (`==`, `!=`, `<`, `<=`, `>`, `>=` against a string, number or
//! boolean literal, or `[?(@.field)]` for existence). Surrounding `{...}` and a leading `$` are
//! accepted. Missing keys yield no result rather than an error, as the printer columns use it
//! (`AllowMissingKeys(true)`).
use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
pub struct JsonPath {
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq)]
enum Segment {
    Field(String),
    Recursive(String),
    Wildcard,
    Index(i64),
    Filter(Filter),
}

#[derive(Debug, Clone, PartialEq)]
struct Filter {
    path: Vec<Segment>,
    test: Option<(CmpOp, Value)>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl JsonPath {
    pub fn parse(expr: &str) -> Result<Self, String> {
        let mut s = expr.trim();
        if let Some(inner) = s.strip_prefix('{').and_then(|r| r.strip_suffix('}')) {
            s = inner.trim();
        }
        let s = s.strip_prefix('$').unwrap_or(s);
        let mut p = Cursor {
            chars: s.chars().collect(),
            pos: 0,
            expr,
        };
        let segments = p.segments(false)?;
        if p.pos < p.chars.len() {
            return Err(format!(
                "unrecognized JSONPath {expr:?} at offset {}",
                p.pos
            ));
        }
        Ok(Self { segments })
    }

    /// All values the path selects, in document order.
    pub fn find<'a>(&self, root: &'a Value) -> Vec<&'a Value> {
        eval(&self.segments, vec![root])
    }
}

fn eval<'a>(segments: &[Segment], start: Vec<&'a Value>) -> Vec<&'a Value> {
    let mut cur = start;
    for seg in segments {
        let mut next = Vec::new();
        for v in cur {
            match seg {
                Segment::Field(name) => next.extend(v.get(name.as_str())),
                Segment::Recursive(name) => descend(v, name, &mut next),
                Segment::Wildcard => match v {
                    Value::Object(m) => next.extend(m.values()),
                    Value::Array(a) => next.extend(a.iter()),
                    _ => {}
                },
                Segment::Index(i) => {
                    if let Value::Array(a) = v {
                        let idx = if *i < 0 { a.len() as i64 + i } else { *i };
                        if let Some(x) = usize::try_from(idx).ok().and_then(|i| a.get(i)) {
                            next.push(x);
                        }
                    }
                }
                Segment::Filter(f) => {
                    if let Value::Array(a) = v {
                        next.extend(a.iter().filter(|x| f.holds(x)));
                    }
                }
            }
        }
        cur = next;
    }
    cur
}

fn descend<'a>(v: &'a Value, name: &str, out: &mut Vec<&'a Value>) {
    match v {
        Value::Object(m) => {
            out.extend(m.get(name));
            for child in m.values() {
                descend(child, name, out);
            }
        }
        Value::Array(a) => {
            for child in a {
                descend(child, name, out);
            }
        }
        _ => {}
    }
}

impl Filter {
    fn holds(&self, item: &Value) -> bool {
        let found = eval(&self.path, vec![item]);
        let Some((op, lit)) = &self.test else {
            return !found.is_empty();
        };
        found.iter().any(|v| compare(v, *op, lit))
    }
}

fn compare(v: &Value, op: CmpOp, lit: &Value) -> bool {
    let ord = match (v, lit) {
        (Value::Number(a), Value::Number(b)) => a
            .as_f64()
            .zip(b.as_f64())
            .and_then(|(a, b)| a.partial_cmp(&b)),
        (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
        (Value::Bool(a), Value::Bool(b)) => Some(a.cmp(b)),
        _ => None,
    };
    match (op, ord) {
        (CmpOp::Ne, None) => true,
        (_, None) => false,
        (CmpOp::Eq, Some(o)) => o.is_eq(),
        (CmpOp::Ne, Some(o)) => o.is_ne(),
        (CmpOp::Lt, Some(o)) => o.is_lt(),
        (CmpOp::Le, Some(o)) => o.is_le(),
        (CmpOp::Gt, Some(o)) => o.is_gt(),
        (CmpOp::Ge, Some(o)) => o.is_ge(),
    }
}

struct Cursor<'e> {
    chars: Vec<char>,
    pos: usize,
    expr: &'e str,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn error(&self, what: &str) -> String {
        format!(
            "invalid JSONPath {:?}: {what} at offset {}",
            self.expr, self.pos
        )
    }

    /// Segments until the end, or (inside a filter) until an operator or `)`.
    fn segments(&mut self, in_filter: bool) -> Result<Vec<Segment>, String> {
        let mut out = Vec::new();
        loop {
            self.skip_ws_if(in_filter);
            match self.peek() {
                None => return Ok(out),
                Some('.') => {
                    self.pos += 1;
                    if self.eat('.') {
                        let name = self.ident();
                        if name.is_empty() {
                            return Err(self.error("expected a field name after '..'"));
                        }
                        out.push(Segment::Recursive(name));
                    } else if self.eat('*') {
                        out.push(Segment::Wildcard);
                    } else {
                        let name = self.ident();
                        // A lone `.` (the whole object) selects the current value.
                        if !name.is_empty() {
                            out.push(Segment::Field(name));
                        }
                    }
                }
                Some('[') => {
                    self.pos += 1;
                    out.push(self.bracket()?);
                    if !self.eat(']') {
                        return Err(self.error("expected ']'"));
                    }
                }
                Some(_) if in_filter => return Ok(out),
                Some(c) if out.is_empty() && is_ident_char(c) => {
                    // Tolerate a missing leading dot (`status.phase`).
                    out.push(Segment::Field(self.ident()));
                }
                Some(c) => return Err(self.error(&format!("unexpected {c:?}"))),
            }
        }
    }

    fn skip_ws_if(&mut self, yes: bool) {
        while yes && self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    fn ident(&mut self) -> String {
        let mut s = String::new();
        while let Some(c) = self.peek() {
            if !is_ident_char(c) {
                break;
            }
            s.push(c);
            self.pos += 1;
        }
        s
    }

    fn bracket(&mut self) -> Result<Segment, String> {
        self.skip_ws_if(true);
        match self.peek() {
            Some('*') => {
                self.pos += 1;
                Ok(Segment::Wildcard)
            }
            Some(q @ ('\'' | '"')) => {
                self.pos += 1;
                let s = self.quoted(q)?;
                Ok(Segment::Field(s))
            }
            Some('?') => {
                self.pos += 1;
                if !self.eat('(') {
                    return Err(self.error("expected '(' after '?'"));
                }
                self.skip_ws_if(true);
                if !self.eat('@') {
                    return Err(self.error("a filter must start with '@'"));
                }
                let path = self.segments(true)?;
                self.skip_ws_if(true);
                let test = if self.eat(')') {
                    None
                } else {
                    let op = self.operator()?;
                    self.skip_ws_if(true);
                    let lit = self.literal()?;
                    self.skip_ws_if(true);
                    if !self.eat(')') {
                        return Err(self.error("expected ')'"));
                    }
                    Some((op, lit))
                };
                Ok(Segment::Filter(Filter { path, test }))
            }
            _ => {
                let start = self.pos;
                self.eat('-');
                while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                    self.pos += 1;
                }
                let text: String = self.chars[start..self.pos].iter().collect();
                let i = text
                    .parse::<i64>()
                    .map_err(|_| self.error("expected an index, '*', a quoted name or a filter"))?;
                self.skip_ws_if(true);
                Ok(Segment::Index(i))
            }
        }
    }

    fn quoted(&mut self, q: char) -> Result<String, String> {
        let mut s = String::new();
        loop {
            match self.peek() {
                None => return Err(self.error("unterminated string")),
                Some('\\') => {
                    self.pos += 1;
                    if let Some(c) = self.peek() {
                        s.push(c);
                        self.pos += 1;
                    }
                }
                Some(c) if c == q => {
                    self.pos += 1;
                    return Ok(s);
                }
                Some(c) => {
                    s.push(c);
                    self.pos += 1;
                }
            }
        }
    }

    fn operator(&mut self) -> Result<CmpOp, String> {
        let two: String = self.chars.iter().skip(self.pos).take(2).collect();
        let (op, len) = match two.as_str() {
            "==" => (CmpOp::Eq, 2),
            "!=" => (CmpOp::Ne, 2),
            "<=" => (CmpOp::Le, 2),
            ">=" => (CmpOp::Ge, 2),
            _ if two.starts_with('<') => (CmpOp::Lt, 1),
            _ if two.starts_with('>') => (CmpOp::Gt, 1),
            _ => return Err(self.error("expected a comparison operator or ')'")),
        };
        self.pos += len;
        Ok(op)
    }

    fn literal(&mut self) -> Result<Value, String> {
        match self.peek() {
            Some(q @ ('\'' | '"')) => {
                self.pos += 1;
                Ok(Value::String(self.quoted(q)?))
            }
            _ => {
                let start = self.pos;
                while self
                    .peek()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '+' | '.'))
                {
                    self.pos += 1;
                }
                let text: String = self.chars[start..self.pos].iter().collect();
                match text.as_str() {
                    "true" => Ok(Value::Bool(true)),
                    "false" => Ok(Value::Bool(false)),
                    t => serde_json::from_str::<serde_json::Number>(t)
                        .map(Value::Number)
                        .map_err(|_| self.error("expected a quoted string, number or boolean")),
                }
            }
        }
    }
}

fn is_ident_char(c: char) -> bool {
    !matches!(
        c,
        '.' | '['
            | ']'
            | '{'
            | '}'
            | '('
            | ')'
            | '='
            | '!'
            | '<'
            | '>'
            | ' '
            | '\t'
            | '\''
            | '"'
            | '@'
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn doc() -> Value {
        json!({
            "metadata": {"name": "x", "annotations": {"a.b/c": "dot"}},
            "spec": {"ports": [{"port": 80, "name": "http"}, {"port": 443}], "replicas": 2},
            "status": {"conditions": [
                {"type": "Available", "status": "True"},
                {"type": "Progressing", "status": "False", "reason": "Deadline"}
            ]}
        })
    }

    #[test]
    fn paths_table() {
        let d = doc();
        let cases: &[(&str, Value)] = &[
            (".metadata.name", json!(["x"])),
            ("{.metadata.name}", json!(["x"])),
            ("$.metadata.name", json!(["x"])),
            ("metadata.name", json!(["x"])),
            (".spec.ports[0].port", json!([80])),
            (".spec.ports[-1].port", json!([443])),
            (".spec.ports[*].port", json!([80, 443])),
            (".spec.ports[*].name", json!(["http"])),
            (".spec.ports[5].port", json!([])),
            (".metadata.annotations['a.b/c']", json!(["dot"])),
            (".metadata.annotations[\"a.b/c\"]", json!(["dot"])),
            (".missing.deeper", json!([])),
            (".spec.replicas.x", json!([])),
            ("..port", json!([80, 443])),
            (
                ".status.conditions[?(@.type==\"Progressing\")].reason",
                json!(["Deadline"]),
            ),
            (
                ".status.conditions[?(@.type == 'Available')].status",
                json!(["True"]),
            ),
            (
                ".status.conditions[?(@.reason)].type",
                json!(["Progressing"]),
            ),
            (".spec.ports[?(@.port > 100)].port", json!([443])),
            (".spec.ports[?(@.port != 80)].port", json!([443])),
            (
                ".spec.*",
                json!([[{"port": 80, "name": "http"}, {"port": 443}], 2]),
            ),
        ];
        for (path, want) in cases {
            let p = JsonPath::parse(path).unwrap_or_else(|e| panic!("{path}: {e}"));
            let got: Vec<Value> = p.find(&d).into_iter().cloned().collect();
            assert_eq!(Value::Array(got), *want, "{path}");
        }
    }

    #[test]
    fn bad_paths_are_errors() {
        for path in [
            ".a[",
            ".a[x]",
            ".a[?(@.b ~ 1)]",
            ".a['x",
            ".a]",
            "..",
            ".a[?(b)]",
        ] {
            assert!(JsonPath::parse(path).is_err(), "{path}");
        }
    }

    proptest! {
        #[test]
        fn random_paths_never_panic(s in "[.\\[\\]*?@()=!<>'\"a-c0-9 {}$-]{0,24}") {
            if let Ok(p) = JsonPath::parse(&s) {
                let _ = p.find(&doc());
            }
        }
    }
}
