//! The real `flagger-loadtester` binary as a child process on 127.0.0.1, with its JSON log lines
//! (stderr) collected so a test can see every webhook call it received. Killed on drop.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

pub struct LoadTester {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    logs: Arc<Mutex<Vec<Value>>>,
    http: reqwest::Client,
}

impl LoadTester {
    pub fn start(args: &[&str]) -> LoadTester {
        let mut child = Command::new(env!("CARGO_BIN_EXE_flagger-loadtester"))
            .args(["--port", "0", "--bind", "127.0.0.1"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("flagger-loadtester starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .strip_prefix("flagger-loadtester listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        let logs: Arc<Mutex<Vec<Value>>> = Arc::default();
        let sink = logs.clone();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let json = serde_json::from_str(&line).unwrap_or(Value::String(line));
                sink.lock().unwrap().push(json);
            }
        });
        let http = flagger_actors::http::build_client(&Default::default()).unwrap();
        LoadTester {
            child,
            url,
            logs,
            http,
        }
    }

    /// `POST <url><path>` with a JSON body; (status, body).
    pub async fn post(&self, path: &str, body: Value) -> (u16, String) {
        let r = self
            .http
            .post(format!("{}{path}", self.url))
            // Blocking commands answer when they finish (or time out).
            .timeout(Duration::from_secs(30))
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// Log lines whose `message` is `msg`, in order.
    pub fn logged(&self, msg: &str) -> Vec<Value> {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l["message"] == msg)
            .cloned()
            .collect()
    }

    /// The task (load test) webhook calls received: (canary, phase, hook type), in order.
    pub fn task_requests(&self) -> Vec<(String, String, String)> {
        self.logged("task request received")
            .iter()
            .map(|l| {
                let field = |k: &str| l[k].as_str().unwrap_or_default().to_owned();
                (field("canary"), field("phase"), field("hook_type"))
            })
            .collect()
    }
}

impl Drop for LoadTester {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
