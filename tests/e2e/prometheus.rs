//! A real Prometheus (the Debian package, or `$PROMETHEUS`) on 127.0.0.1 with a temporary TSDB,
//! scraping the given targets every second. Killed on drop.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub struct Prometheus {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` (`host:port`, `/metrics`) every second and waits
    /// until it answers queries.
    pub async fn start(targets: &[String]) -> Prometheus {
        let bin = std::env::var("PROMETHEUS").unwrap_or_else(|_| "prometheus".into());
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        let targets = targets
            .iter()
            .map(|t| format!("'{t}'"))
            .collect::<Vec<_>>()
            .join(", ");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: testbed\n    scrape_interval: 1s\n    scrape_timeout: 900ms\n    static_configs:\n      - targets: [{targets}]\n"
            ),
        )
        .unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let child = Command::new(&bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run `{bin}` ({e}): install the Debian package `prometheus` (scripts/install-deps) or set PROMETHEUS")
            });
        let prometheus = Prometheus {
            child,
            url: format!("http://{addr}"),
            http: flagger_actors::http::build_client(&Default::default()).unwrap(),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = prometheus
                .http
                .get(format!("{}/-/ready", prometheus.url))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return prometheus;
            }
            assert!(Instant::now() < deadline, "prometheus not ready after 30s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `GET <path>?<params>`: (HTTP status, JSON body).
    pub async fn get(&self, path: &str, params: &[(&str, &str)]) -> (u16, Value) {
        let url = reqwest::Url::parse_with_params(&format!("{}{path}", self.url), params).unwrap();
        let r = self
            .http
            .get(url)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// An instant query: (HTTP status, JSON body).
    pub async fn query(&self, promql: &str) -> (u16, Value) {
        self.get("/api/v1/query", &[("query", promql)]).await
    }

    /// Waits until `promql` returns a non-empty vector (the first scrapes are in).
    pub async fn wait_for_data(&self, promql: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let (_, body) = self.query(promql).await;
            if body["data"]["result"]
                .as_array()
                .is_some_and(|r| !r.is_empty())
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus has no data for {promql} after {timeout:?}: {body}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
