//! Outbound HTTP shared by the metric providers, webhooks and notifiers.
//!
//! - [`install_crypto_provider`] installs ring as rustls' process-wide provider (reqwest and kube
//!   are built without one). Every client built here calls it first; the operator's `main` calls it
//!   too before building the kube client.
//! - [`HttpClients`] caches one `reqwest::Client` (connection pool) per TLS/proxy setting. Clients
//!   have a connect timeout; callers put a per-request timeout on every request.
//! - [`display_url`] and [`describe_error`] produce texts for events and logs that never contain
//!   userinfo, query strings or headers.

use std::collections::HashMap;
use std::error::Error as _;
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::secret::SecretString;

/// Time allowed to open a TCP (and TLS) connection; request timeouts are set per call.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Installs ring as rustls' default `CryptoProvider`, once per process. Idempotent; a provider
/// installed earlier by someone else is kept.
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Err means another provider is already installed, which serves just as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// How a client connects. Two requests with equal options share a client.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct ClientOptions {
    /// Accept any server certificate (`insecureSkipVerify`, webhook `disableTLS`).
    pub insecure_skip_verify: bool,
    /// HTTP(S) proxy for every request of this client.
    pub proxy: Option<SecretString>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// The proxy URL does not parse; the URL itself is not shown (it may carry credentials).
    #[error("invalid proxy URL")]
    InvalidProxy,
    #[error("building the HTTP client failed: {0}")]
    Build(String),
}

/// Builds a client for `options`.
pub fn build_client(options: &ClientOptions) -> Result<reqwest::Client, HttpError> {
    install_crypto_provider();
    let mut builder = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .user_agent(concat!("flagger-rs/", env!("CARGO_PKG_VERSION")))
        .tls_danger_accept_invalid_certs(options.insecure_skip_verify);
    builder = match &options.proxy {
        Some(proxy) => {
            builder.proxy(reqwest::Proxy::all(proxy.expose()).map_err(|_| HttpError::InvalidProxy)?)
        }
        // No proxy unless configured: environment proxies would surprise loopback tests.
        None => builder.no_proxy(),
    };
    builder
        .build()
        .map_err(|e| HttpError::Build(describe_error(&e)))
}

/// One client per [`ClientOptions`], built on first use.
#[derive(Debug, Default)]
pub struct HttpClients {
    clients: Mutex<HashMap<ClientOptions, reqwest::Client>>,
}

impl HttpClients {
    pub fn get(&self, options: &ClientOptions) -> Result<reqwest::Client, HttpError> {
        let mut clients = self
            .clients
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(c) = clients.get(options) {
            return Ok(c.clone());
        }
        let client = build_client(options)?;
        clients.insert(options.clone(), client.clone());
        Ok(client)
    }
}

/// Bounds the requests in flight to each host (`host:port`).
#[derive(Debug)]
pub struct HostLimiter {
    per_host: usize,
    hosts: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl HostLimiter {
    pub fn new(per_host: usize) -> Self {
        Self {
            per_host: per_host.max(1),
            hosts: Mutex::new(HashMap::new()),
        }
    }

    /// Waits for a slot for `url`'s host. Unparsable URLs share one slot group.
    pub async fn acquire(&self, url: &str) -> OwnedSemaphorePermit {
        let host = reqwest::Url::parse(url)
            .ok()
            .map(|u| {
                format!(
                    "{}:{}",
                    u.host_str().unwrap_or_default(),
                    u.port_or_known_default().unwrap_or_default()
                )
            })
            .unwrap_or_default();
        let semaphore = {
            let mut hosts = self
                .hosts
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            hosts
                .entry(host)
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_host)))
                .clone()
        };
        loop {
            // The semaphore is never closed; the loop only satisfies the type.
            if let Ok(permit) = semaphore.clone().acquire_owned().await {
                return permit;
            }
        }
    }
}

/// `url` without userinfo, query and fragment (they often carry tokens); `<invalid URL>` when it
/// does not parse.
pub fn display_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        }
        Err(_) => "<invalid URL>".to_owned(),
    }
}

/// A transport error as text, without the URL: `timeout`, or the error and its causes joined with
/// `: ` (e.g. `error sending request: client error (Connect): tcp connect error: Connection
/// refused (os error 111)`).
pub fn describe_error(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        return "timeout".to_owned();
    }
    let mut parts: Vec<String> = Vec::new();
    let mut push = |s: String| {
        if !parts.iter().any(|p| p == &s) {
            parts.push(s);
        }
    };
    let stripped = error.to_string();
    // reqwest appends ` for url (...)`; cut it rather than trusting `without_url` on a clone.
    let head = stripped
        .split(" for url (")
        .next()
        .unwrap_or(&stripped)
        .to_owned();
    push(head);
    let mut source = error.source();
    while let Some(s) = source {
        push(s.to_string());
        source = s.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn display_url_drops_credentials_and_query() {
        assert_eq!(
            display_url("https://user:pa55@prom.example:9090/prom?token=abc#x"),
            "https://prom.example:9090/prom"
        );
        assert_eq!(display_url("not a url"), "<invalid URL>");
    }

    #[test]
    fn clients_are_built_and_shared() {
        let clients = HttpClients::default();
        let insecure = ClientOptions {
            insecure_skip_verify: true,
            proxy: None,
        };
        clients.get(&insecure).unwrap();
        clients.get(&ClientOptions::default()).unwrap();
        clients.get(&insecure).unwrap();
        assert_eq!(clients.clients.lock().unwrap().len(), 2);
        let proxied = ClientOptions {
            insecure_skip_verify: false,
            proxy: Some(SecretString::new("http://u:secret@127.0.0.1:3128")),
        };
        clients.get(&proxied).unwrap();
    }

    #[test]
    fn invalid_proxy_error_hides_the_url() {
        let bad = ClientOptions {
            insecure_skip_verify: false,
            proxy: Some(SecretString::new("::not a url with secret-xyz")),
        };
        let err = build_client(&bad).unwrap_err();
        assert!(!err.to_string().contains("secret-xyz"), "{err}");
    }
}
