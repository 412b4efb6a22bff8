//! Runs `metadata.cmd` through a shell: at most `max_concurrent` at once, each with a timeout
//! (its whole process group is killed when it expires), identical background commands of one
//! canary deduplicated while one is queued or running.

use std::collections::HashSet;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::process::Command;
use tokio::sync::Semaphore;
use tracing::{info, warn};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shell {
    Sh,
    Bash,
}

pub struct Runner {
    permits: Arc<Semaphore>,
    running: Arc<Mutex<HashSet<String>>>,
}

impl Runner {
    pub fn new(max_concurrent: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max_concurrent.max(1))),
            running: Arc::new(Mutex::new(HashSet::new())),
        }
    }

    /// Starts `cmd` in the background unless the same command of the same canary is already
    /// queued or running. Returns false for a duplicate.
    pub fn spawn(&self, canary: &str, cmd: String, shell: Shell, timeout: Duration) -> bool {
        let key = format!("{canary}\n{cmd}");
        {
            let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
            if !running.insert(key.clone()) {
                return false;
            }
        }
        let permits = Arc::clone(&self.permits);
        let running = Arc::clone(&self.running);
        let canary = canary.to_owned();
        tokio::spawn(async move {
            let _permit = permits.acquire_owned().await.ok();
            info!(canary, cmd, "running command");
            match execute(&cmd, shell, timeout).await {
                Ok(_) => info!(canary, cmd, "command finished"),
                Err(e) => warn!(canary, cmd, error = %e, "command failed"),
            }
            running
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&key);
        });
        true
    }

    /// Runs `cmd` and waits for it; Ok(stdout) or Err(text for the response).
    pub async fn run(&self, cmd: &str, shell: Shell, timeout: Duration) -> Result<String, String> {
        let _permit = self.permits.acquire().await.ok();
        execute(cmd, shell, timeout).await
    }
}

async fn execute(cmd: &str, shell: Shell, timeout: Duration) -> Result<String, String> {
    let program = match shell {
        Shell::Sh => "sh",
        Shell::Bash => "bash",
    };
    let child = Command::new(program)
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Own process group, so a timeout kills the command's children (hey) too.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("command {cmd} failed to start: {e}"))?;
    let pid = child.id();
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(out)) if out.status.success() => {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        }
        Ok(Ok(out)) => Err(format!(
            "command {cmd} failed: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Ok(Err(e)) => Err(format!("command {cmd} failed: {e}")),
        Err(_) => {
            if let Some(pid) = pid {
                // `kill` on the negative pid signals the whole group.
                let _ = Command::new("kill")
                    .args(["-KILL", "--", &format!("-{pid}")])
                    .status()
                    .await;
            }
            Err(format!(
                "command {cmd} timed out after {}",
                flagger_rollout::duration::format_go_duration(timeout)
            ))
        }
    }
}
