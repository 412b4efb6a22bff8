//! [`CanaryKey`]: the identity of a Canary that travels in every actor message and tracing span.

use std::fmt;

/// Namespace and name of a Canary object.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CanaryKey {
    pub namespace: String,
    pub name: String,
}

impl CanaryKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

/// `<name>.<namespace>`, the form upstream uses in events, logs and chat messages.
impl fmt::Display for CanaryKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.name, self.namespace)
    }
}
