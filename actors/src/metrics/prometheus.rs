//! Prometheus instant queries (`/api/v1/query`), flagger-behavior §4.6.
//!
//! - The query's whitespace runs are collapsed to one space, as upstream.
//! - `GET <address>/api/v1/query?query=...`; a query whose URL would exceed
//!   [`MAX_GET_URL_LEN`] is sent as a `POST` form instead (Prometheus accepts both).
//! - Bearer token or basic auth, and custom headers, all held as [`SecretString`].
//! - A vector's **last** sample wins (upstream); a scalar is accepted; an empty result or NaN is
//!   [`MetricsError::NoValues`]; a matrix is [`MetricsError::MultipleValues`].
//! - Error texts carry the address without userinfo, never headers, and response bodies are
//!   truncated and scrubbed of every credential of the server.

use std::time::Duration;

use flagger_rollout::duration::format_go_duration;
use flagger_rollout::template::collapse_whitespace;

use super::MetricsError;
use crate::http::{ClientOptions, describe_error, display_url};
use crate::secret::{SecretString, redact};

/// Longest URL sent as GET; longer queries go as a POST form.
pub const MAX_GET_URL_LEN: usize = 2048;
/// Longest response body quoted in an error.
const MAX_BODY_IN_ERROR: usize = 512;

/// Credentials of a Prometheus server.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum PrometheusAuth {
    #[default]
    None,
    /// `Authorization: Bearer <token>` (Secret key `token`).
    Bearer(SecretString),
    /// Basic auth (Secret keys `username` and `password`).
    Basic {
        username: SecretString,
        password: SecretString,
    },
}

/// One Prometheus endpoint with its credentials. Equal values share queries and clients.
/// `Debug` shows the address without userinfo.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PrometheusServer {
    /// Base URL, e.g. `http://prometheus.istio-system:9090` (a path prefix is kept).
    pub address: String,
    pub auth: PrometheusAuth,
    /// Extra request headers (`provider.headers`); values may be API keys, so they are secrets.
    pub headers: Vec<(String, SecretString)>,
    pub insecure_skip_verify: bool,
}

impl std::fmt::Debug for PrometheusServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrometheusServer")
            .field("address", &self.display_address())
            .field("auth", &self.auth)
            .field("headers", &self.headers)
            .field("insecure_skip_verify", &self.insecure_skip_verify)
            .finish()
    }
}

impl PrometheusServer {
    /// A server with no credentials and no extra headers.
    pub fn new(address: impl Into<String>) -> Self {
        Self {
            address: address.into(),
            auth: PrometheusAuth::None,
            headers: Vec::new(),
            insecure_skip_verify: false,
        }
    }

    /// The address without credentials or query, for texts.
    pub fn display_address(&self) -> String {
        display_url(&self.address)
    }

    pub(crate) fn client_options(&self) -> ClientOptions {
        ClientOptions {
            insecure_skip_verify: self.insecure_skip_verify,
            proxy: None,
        }
    }

    /// Every value that must never appear in a text.
    fn secrets(&self) -> Vec<SecretString> {
        use base64::Engine as _;
        // Basic credentials also travel base64-encoded; an echoing server must not leak those.
        let encoded = |user: &str, password: &str| {
            SecretString::new(
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")),
            )
        };
        let mut out: Vec<SecretString> = self.headers.iter().map(|(_, v)| v.clone()).collect();
        match &self.auth {
            PrometheusAuth::None => {}
            PrometheusAuth::Bearer(t) => out.push(t.clone()),
            PrometheusAuth::Basic { username, password } => {
                out.push(encoded(username.expose(), password.expose()));
                out.push(username.clone());
                out.push(password.clone());
            }
        }
        if let Ok(u) = reqwest::Url::parse(&self.address)
            && !u.username().is_empty()
        {
            let password = u.password().unwrap_or_default();
            out.push(encoded(u.username(), password));
            out.push(SecretString::new(u.username()));
            out.push(SecretString::new(password));
        }
        out
    }

    /// `<address>/api/v1/query`, keeping a path prefix of the address.
    fn query_url(&self) -> Result<reqwest::Url, MetricsError> {
        let mut url = reqwest::Url::parse(&self.address)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| {
                MetricsError::Config(format!(
                    "prometheus address {} is not a valid URL",
                    self.display_address()
                ))
            })?;
        let path = format!("{}/api/v1/query", url.path().trim_end_matches('/'));
        url.set_path(&path);
        url.set_query(None);
        Ok(url)
    }
}

/// Runs one instant query and returns its value.
pub async fn run_query(
    client: &reqwest::Client,
    server: &PrometheusServer,
    query: &str,
    timeout: Duration,
) -> Result<f64, MetricsError> {
    let query = collapse_whitespace(query);
    let base = server.query_url()?;
    let mut get_url = base.clone();
    get_url.query_pairs_mut().append_pair("query", &query);
    let use_get = get_url.as_str().len() <= MAX_GET_URL_LEN;
    // Transport errors name the endpoint (never its credentials or the query), as upstream's
    // `Get "<url>": dial tcp ...` does, so an event says which server is unreachable.
    let endpoint = format!(
        "{} {}",
        if use_get { "GET" } else { "POST" },
        display_url(base.as_str())
    );
    let mut request = if use_get {
        client.get(get_url)
    } else {
        let body = get_url.query().unwrap_or_default().to_owned();
        client
            .post(base)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body)
    };
    request = request.timeout(timeout);
    for (name, value) in &server.headers {
        request = request.header(name.as_str(), value.expose());
    }
    request = match &server.auth {
        PrometheusAuth::None => request,
        PrometheusAuth::Bearer(token) => request.bearer_auth(token.expose()),
        PrometheusAuth::Basic { username, password } => {
            request.basic_auth(username.expose(), Some(password.expose()))
        }
    };
    let scrub = |text: &str| redact(text, &server.secrets());
    let response = request.send().await.map_err(|e| {
        if e.is_timeout() {
            MetricsError::Timeout(timeout)
        } else {
            MetricsError::Unreachable(scrub(&format!("{endpoint}: {}", describe_error(&e))))
        }
    })?;
    let status = response.status();
    let body = response.text().await.map_err(|e| {
        if e.is_timeout() {
            MetricsError::Timeout(timeout)
        } else {
            MetricsError::Unreachable(scrub(&format!(
                "{endpoint}: error reading body: {}",
                describe_error(&e)
            )))
        }
    })?;
    if !status.is_success() {
        return Err(MetricsError::Status {
            status: status.to_string(),
            body: scrub(&truncate(body.trim())),
        });
    }
    parse_response(&body).map_err(|e| match e {
        MetricsError::InvalidResponse(reason) => MetricsError::InvalidResponse(scrub(&reason)),
        other => other,
    })
}

/// Reads the value out of a query API response body.
pub fn parse_response(body: &str) -> Result<f64, MetricsError> {
    let invalid =
        |why: String| MetricsError::InvalidResponse(format!("{why}, '{}'", truncate(body.trim())));
    let json: serde_json::Value = serde_json::from_str(body).map_err(|e| invalid(e.to_string()))?;
    if json.get("status").and_then(|s| s.as_str()) == Some("error") {
        let text = |k: &str| {
            json.get(k)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_owned()
        };
        return Err(MetricsError::Query {
            error_type: text("errorType"),
            message: text("error"),
        });
    }
    let data = json
        .get("data")
        .ok_or_else(|| invalid("no data field".to_owned()))?;
    let result = data
        .get("result")
        .ok_or_else(|| invalid("no data.result field".to_owned()))?;
    let value = match data.get("resultType").and_then(|t| t.as_str()) {
        Some("scalar") => Some(sample_value(result).ok_or_else(|| invalid(bad_sample()))?),
        Some("matrix") => return Err(MetricsError::MultipleValues),
        _ => {
            let items = result
                .as_array()
                .ok_or_else(|| invalid("data.result is not a list".to_owned()))?;
            let mut last = None;
            for item in items {
                if item.get("values").is_some() {
                    return Err(MetricsError::MultipleValues);
                }
                let sample = item
                    .get("value")
                    .ok_or_else(|| invalid("sample without value".to_owned()))?;
                last = Some(sample_value(sample).ok_or_else(|| invalid(bad_sample()))?);
            }
            last
        }
    };
    match value {
        Some(v) if !v.is_nan() => Ok(v),
        _ => Err(MetricsError::NoValues),
    }
}

fn bad_sample() -> String {
    "sample is not [timestamp, \"number\"]".to_owned()
}

/// `[ <time>, "<number>" ]` → number (`NaN`, `+Inf`, `-Inf` included).
fn sample_value(sample: &serde_json::Value) -> Option<f64> {
    let text = sample.as_array()?.get(1)?.as_str()?;
    match text {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        t => t.parse().ok(),
    }
}

fn truncate(text: &str) -> String {
    if text.len() <= MAX_BODY_IN_ERROR {
        return text.to_owned();
    }
    let mut end = MAX_BODY_IN_ERROR;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

/// `5s` for a timeout text.
pub(crate) fn timeout_text(timeout: Duration) -> String {
    format_go_duration(timeout)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn last_sample_of_a_vector_wins() {
        let body = r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"a":"1"},"value":[1,"10"]},{"metric":{"a":"2"},"value":[1,"99.5"]}]}}"#;
        assert_eq!(parse_response(body).unwrap(), 99.5);
    }

    #[test]
    fn empty_vector_and_nan_are_no_values() {
        let empty = r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert_eq!(parse_response(empty).unwrap_err(), MetricsError::NoValues);
        let nan = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"NaN"]}]}}"#;
        assert_eq!(parse_response(nan).unwrap_err(), MetricsError::NoValues);
    }

    #[test]
    fn scalar_matrix_error_and_garbage() {
        let scalar = r#"{"status":"success","data":{"resultType":"scalar","result":[1,"1"]}}"#;
        assert_eq!(parse_response(scalar).unwrap(), 1.0);
        let matrix = r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1,"1"]]}]}}"#;
        assert_eq!(
            parse_response(matrix).unwrap_err(),
            MetricsError::MultipleValues
        );
        let err = r#"{"status":"error","errorType":"bad_data","error":"parse error at char 4"}"#;
        assert_eq!(
            parse_response(err).unwrap_err().to_string(),
            "error response: bad_data: parse error at char 4"
        );
        let garbage = parse_response("<html>oops</html>").unwrap_err();
        assert!(matches!(garbage, MetricsError::InvalidResponse(_)));
        assert!(
            garbage.to_string().contains("<html>oops</html>"),
            "{garbage}"
        );
    }

    #[test]
    fn query_url_keeps_a_path_prefix_and_rejects_non_http() {
        let s = PrometheusServer::new("http://prom:9090/prometheus/");
        assert_eq!(
            s.query_url().unwrap().as_str(),
            "http://prom:9090/prometheus/api/v1/query"
        );
        let bad = PrometheusServer::new("ftp://user:pw@prom");
        let err = bad.query_url().unwrap_err().to_string();
        assert!(!err.contains("pw"), "{err}");
    }
}
