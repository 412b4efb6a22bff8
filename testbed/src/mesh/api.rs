//! The Prometheus HTTP query API (`GET|POST /api/v1/query`) over the mesh's store, answering in
//! Prometheus's exact JSON shape: `{"status":"success","data":{"resultType":..,"result":..}}`,
//! or `{"status":"error","errorType":"bad_data"|"execution","error":..}` with 400/422.
use std::fmt::Write;

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::promql::{QueryError, Value, format_timestamp, format_value};
use super::tsdb::Labels;

/// Decodes `application/x-www-form-urlencoded` text (also used for URL query strings).
pub fn parse_form(s: &str) -> Vec<(String, String)> {
    fn decode(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                    match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                        Some(b) => {
                            out.push(b);
                            i += 2;
                        }
                        None => out.push(b'%'),
                    }
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}

/// An API failure, rendered the way Prometheus does.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadData(String),
    #[error("{0}")]
    Execution(String),
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        match e {
            QueryError::Execution(_) => ApiError::Execution(e.to_string()),
            QueryError::Parse(_) | QueryError::Unsupported(_) => ApiError::BadData(e.to_string()),
        }
    }
}

impl ApiError {
    pub fn body(&self) -> String {
        let (kind, msg) = match self {
            ApiError::BadData(m) => ("bad_data", m),
            ApiError::Execution(m) => ("execution", m),
        };
        format!(
            r#"{{"status":"error","errorType":"{kind}","error":{}}}"#,
            serde_json::Value::String(msg.clone())
        )
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadData(_) => StatusCode::BAD_REQUEST,
            ApiError::Execution(_) => StatusCode::UNPROCESSABLE_ENTITY,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status(),
            [(header::CONTENT_TYPE, "application/json")],
            self.body(),
        )
            .into_response()
    }
}

/// `time`: unix seconds (fractions allowed) or RFC 3339, as Prometheus accepts it; in ms.
pub fn parse_time(s: &str) -> Result<i64, ApiError> {
    let bad = || {
        ApiError::BadData(format!(
            "invalid parameter \"time\": cannot parse \"{s}\" to a valid timestamp"
        ))
    };
    if let Ok(f) = s.parse::<f64>() {
        if !f.is_finite() {
            return Err(bad());
        }
        let secs = f.trunc();
        let ms = ((f - secs) * 1000.0).round();
        return Ok((secs as i64).saturating_mul(1000).saturating_add(ms as i64));
    }
    s.parse::<jiff::Timestamp>()
        .map(|t| t.as_millisecond())
        .map_err(|_| bad())
}

/// `timeout`: a Prometheus duration (`5s`, `1m30s`) or float seconds. Evaluation here is
/// synchronous and fast, so it is validated but has nothing to cut short.
pub fn parse_timeout(s: &str) -> Result<(), ApiError> {
    let ok = s.parse::<f64>().is_ok_and(|f| f.is_finite() && f >= 0.0)
        || promql_parser::util::parse_duration(s).is_ok();
    if ok {
        Ok(())
    } else {
        Err(ApiError::BadData(format!(
            "invalid parameter \"timeout\": cannot parse \"{s}\" to a valid duration"
        )))
    }
}

fn metric_json(out: &mut String, l: &Labels) {
    out.push('{');
    for (i, (k, v)) in l.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(
            out,
            "{}:{}",
            serde_json::Value::String(k.to_string()),
            serde_json::Value::String(v.to_string())
        );
    }
    out.push('}');
}

fn point_json(out: &mut String, t: i64, v: f64) {
    let _ = write!(out, "[{},\"{}\"]", format_timestamp(t), format_value(v));
}

/// The success body for a query result evaluated at `t_ms`.
pub fn success_body(value: &Value, t_ms: i64) -> String {
    let mut out = String::from(r#"{"status":"success","data":{"resultType":""#);
    match value {
        Value::Scalar(v) => {
            out.push_str(r#"scalar","result":"#);
            point_json(&mut out, t_ms, *v);
        }
        Value::String(s) => {
            let _ = write!(
                out,
                r#"string","result":[{},{}]"#,
                format_timestamp(t_ms),
                serde_json::Value::String(s.clone())
            );
        }
        Value::Vector(samples) => {
            out.push_str(r#"vector","result":["#);
            for (i, s) in samples.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(r#"{"metric":"#);
                metric_json(&mut out, &s.labels);
                out.push_str(r#","value":"#);
                point_json(&mut out, t_ms, s.value);
                out.push('}');
            }
            out.push(']');
        }
        Value::Matrix(series) => {
            out.push_str(r#"matrix","result":["#);
            for (i, (labels, points)) in series.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(r#"{"metric":"#);
                metric_json(&mut out, labels);
                out.push_str(r#","values":["#);
                for (j, (t, v)) in points.iter().enumerate() {
                    if j > 0 {
                        out.push(',');
                    }
                    point_json(&mut out, *t, *v);
                }
                out.push_str("]}");
            }
            out.push(']');
        }
    }
    out.push_str("}}");
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::mesh::promql::Sample;

    #[test]
    fn forms_decode_plus_and_percent() {
        assert_eq!(
            parse_form("query=sum(rate(x%7Ba%3D%22b%22%7D%5B1m%5D))+%2F+2&time=12.5&x"),
            vec![
                ("query".into(), r#"sum(rate(x{a="b"}[1m])) / 2"#.into()),
                ("time".into(), "12.5".into()),
                ("x".into(), String::new())
            ]
        );
        assert_eq!(parse_form("q=100%"), vec![("q".into(), "100%".into())]);
        assert_eq!(parse_form("q=%zz"), vec![("q".into(), "%zz".into())]);
    }

    #[test]
    fn times_parse_as_prometheus_does() {
        assert_eq!(parse_time("1435781451.781").unwrap(), 1_435_781_451_781);
        assert_eq!(parse_time("1435781451").unwrap(), 1_435_781_451_000);
        assert_eq!(
            parse_time("2015-07-01T20:10:51.781Z").unwrap(),
            1_435_781_451_781
        );
        assert!(parse_time("yesterday").is_err());
        assert!(parse_timeout("5s").is_ok() && parse_timeout("1.5").is_ok());
        assert!(parse_timeout("soon").is_err());
    }

    #[test]
    fn bodies_have_prometheus_shape() {
        let l = Labels::from_pairs([("a", "x\"y"), ("b", "2")]);
        let v = Value::Vector(vec![Sample {
            labels: l.clone(),
            value: 0.5,
        }]);
        assert_eq!(
            success_body(&v, 1_000_500),
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"a":"x\"y","b":"2"},"value":[1000.500,"0.5"]}]}}"#
        );
        assert_eq!(
            success_body(&Value::Vector(vec![]), 1000),
            r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#
        );
        assert_eq!(
            success_body(&Value::Scalar(f64::NAN), 2000),
            r#"{"status":"success","data":{"resultType":"scalar","result":[2,"NaN"]}}"#
        );
        assert_eq!(
            success_body(
                &Value::Matrix(vec![(l, vec![(1000, 1.0), (2000, 2.0)])]),
                2000
            ),
            r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"a":"x\"y","b":"2"},"values":[[1,"1"],[2,"2"]]}]}}"#
        );
        let e = ApiError::from(QueryError::Unsupported("function abs()".into()));
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        let body: serde_json::Value = serde_json::from_str(&e.body()).unwrap();
        assert_eq!(body["status"], "error");
        assert_eq!(body["errorType"], "bad_data");
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .ends_with("unsupported: function abs()")
        );
    }
}
