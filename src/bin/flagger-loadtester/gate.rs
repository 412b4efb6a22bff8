//! Gate state: `<name>.<namespace>` and `rollback.<name>.<namespace>` keys, open or closed
//! (unknown = closed). With a state file every change is written atomically (temp file, fsync,
//! rename) before the request is answered, so approvals survive a restart.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::Context as _;

pub struct GateStore {
    path: Option<PathBuf>,
    gates: Mutex<BTreeMap<String, bool>>,
}

impl GateStore {
    /// Loads `path` if it exists (a missing file is an empty store; a corrupt one is an error).
    pub fn load(path: Option<PathBuf>) -> anyhow::Result<Self> {
        let gates = match &path {
            Some(p) if p.exists() => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("reading gate state {}", p.display()))?;
                serde_json::from_str(&text)
                    .with_context(|| format!("parsing gate state {}", p.display()))?
            }
            _ => BTreeMap::new(),
        };
        Ok(Self {
            path,
            gates: Mutex::new(gates),
        })
    }

    pub fn is_open(&self, key: &str) -> bool {
        let gates = self.gates.lock().unwrap_or_else(|p| p.into_inner());
        gates.get(key).copied().unwrap_or(false)
    }

    /// Sets `key` and persists the whole state.
    pub fn set(&self, key: &str, open: bool) -> anyhow::Result<()> {
        let mut gates = self.gates.lock().unwrap_or_else(|p| p.into_inner());
        gates.insert(key.to_owned(), open);
        if let Some(path) = &self.path {
            write_atomically(path, &serde_json::to_vec_pretty(&*gates)?)?;
        }
        Ok(())
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("gates");
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = std::fs::File::create(&tmp)
        .with_context(|| format!("writing gate state {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("replacing gate state {}", path.display()))?;
    Ok(())
}
