//! [`SecretString`]: the one type for webhook URLs, tokens, passwords and proxy URLs.
//!
//! `Debug` and `Display` print `<redacted>`; the value is read with [`SecretString::expose`] only
//! at the point where it is sent. Error texts that may contain a secret by accident (a response
//! body echoing a header) go through [`redact`].

use std::fmt;
use std::str::FromStr;

/// A secret value. Compares and hashes by value so it can key caches, never prints it.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct SecretString(String);

impl SecretString {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for the request that carries it. Never log or format the result.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString(<redacted>)")
    }
}

impl fmt::Display for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl From<String> for SecretString {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for SecretString {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

impl FromStr for SecretString {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

impl<'de> serde::Deserialize<'de> for SecretString {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self)
    }
}

/// Replaces every occurrence of each non-trivial secret in `text` with `<redacted>`.
/// Values shorter than 4 characters are left alone: replacing them would garble the text and
/// they carry no secret worth hiding.
pub fn redact<'a>(text: &str, secrets: impl IntoIterator<Item = &'a SecretString>) -> String {
    let mut out = text.to_owned();
    for s in secrets {
        if s.0.len() >= 4 && out.contains(&s.0) {
            out = out.replace(&s.0, "<redacted>");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_the_value() {
        let s = SecretString::new("hunter2-token");
        assert_eq!(format!("{s}"), "<redacted>");
        assert_eq!(format!("{s:?}"), "SecretString(<redacted>)");
        assert_eq!(format!("{:?}", Some(&s)), "Some(SecretString(<redacted>))");
        assert_eq!(s.expose(), "hunter2-token");
    }

    #[test]
    fn redact_replaces_every_secret() {
        let a = SecretString::new("tok-123");
        let b = SecretString::new("pw");
        assert_eq!(
            redact("got tok-123 and tok-123, pw", [&a, &b]),
            "got <redacted> and <redacted>, pw"
        );
    }
}
