//! `GET /metrics`: the current Istio counters in Prometheus text format 0.0.4, as a proxy's
//! stats endpoint would expose them, for a real Prometheus to scrape. Values are printed with
//! the shortest representation that parses back to the same float, so a scrape stores exactly
//! what the mesh's own store holds.
use std::fmt::Write;

use super::traffic::{DURATION, Flow, LE, REQUESTS_TOTAL};

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

fn escape(v: &str) -> String {
    v.replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Formats a sample value as the text format expects (`+Inf`, `-Inf`, `NaN`).
pub fn format_float(v: f64) -> String {
    super::promql::format_value(v)
}

/// Renders every active flow. Series are ordered by flow then response code, families grouped.
pub(super) fn render(flows: &[Flow]) -> String {
    let mut active: Vec<&Flow> = flows.iter().filter(|f| f.active).collect();
    active.sort_by(|a, b| a.labels.cmp(&b.labels));
    let label_str = |f: &Flow, code: u16| -> String {
        let mut s = String::new();
        for (k, v) in &f.labels {
            let _ = write!(s, "{k}=\"{}\",", escape(v));
        }
        let _ = write!(s, "response_code=\"{code}\"");
        s
    };
    let mut out = String::new();
    out.push_str(&format!(
        "# HELP {REQUESTS_TOTAL} Total requests.\n# TYPE {REQUESTS_TOTAL} counter\n"
    ));
    for f in &active {
        for c in &f.codes {
            let _ = writeln!(
                out,
                "{REQUESTS_TOTAL}{{{}}} {}",
                label_str(f, c.code),
                c.requests
            );
        }
    }
    out.push_str(&format!(
        "# HELP {DURATION} Request duration in milliseconds.\n# TYPE {DURATION} histogram\n"
    ));
    for f in &active {
        for c in &f.codes {
            let labels = label_str(f, c.code);
            let values = c.values();
            for (i, le) in LE.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "{DURATION}_bucket{{{labels},le=\"{le}\"}} {}",
                    format_float(values[1 + i])
                );
            }
            let _ = writeln!(
                out,
                "{DURATION}_sum{{{labels}}} {}",
                format_float(values[21])
            );
            let _ = writeln!(
                out,
                "{DURATION}_count{{{labels}}} {}",
                format_float(values[22])
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_label_values() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
