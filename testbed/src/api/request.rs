//! Parsing of resource request paths and query parameters.
use std::collections::BTreeMap;

/// A resource path: `/api/v1/[namespaces/<ns>/]<plural>[/<name>[/<sub>]]` or the same under
/// `/apis/<group>/<version>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub group: String,
    pub version: String,
    pub namespace: Option<String>,
    pub plural: String,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

/// Subresources of `namespaces` (so `/api/v1/namespaces/x/status` is not "resource status in x").
const NAMESPACE_SUBRESOURCES: &[&str] = &["status", "finalize"];

pub fn parse_path(path: &str) -> Option<Target> {
    let trimmed = path.strip_suffix('/').unwrap_or(path);
    let segs: Vec<&str> = trimmed.split('/').skip(1).collect();
    if segs.iter().any(|s| s.is_empty()) {
        return None;
    }
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => (String::new(), v.to_string(), rest),
        ["apis", g, v, rest @ ..] => (g.to_string(), v.to_string(), rest),
        _ => return None,
    };
    let owned = |s: &&str| s.to_string();
    let (namespace, rest) = match rest {
        ["namespaces", ns, plural, tail @ ..] if !NAMESPACE_SUBRESOURCES.contains(plural) => {
            let mut v = vec![*plural];
            v.extend_from_slice(tail);
            (Some(ns.to_string()), v)
        }
        _ => (None, rest.to_vec()),
    };
    let (plural, name, subresource) = match rest.as_slice() {
        [p] => (p.to_string(), None, None),
        [p, n] => (p.to_string(), Some(owned(n)), None),
        [p, n, s] => (p.to_string(), Some(owned(n)), Some(owned(s))),
        _ => return None,
    };
    Some(Target {
        group,
        version,
        namespace,
        plural,
        name,
        subresource,
    })
}

/// Query parameters (last value wins, as the API server reads them).
#[derive(Clone, Debug, Default)]
pub struct Query(BTreeMap<String, String>);

impl Query {
    pub fn parse(raw: Option<&str>) -> Result<Self, String> {
        let Some(raw) = raw else {
            return Ok(Self::default());
        };
        let uri: http::Uri = format!("/?{raw}")
            .parse()
            .map_err(|e| format!("invalid query string: {e}"))?;
        let axum::extract::Query(pairs) =
            axum::extract::Query::<Vec<(String, String)>>::try_from_uri(&uri)
                .map_err(|e| format!("invalid query string: {e}"))?;
        Ok(Self(pairs.into_iter().collect()))
    }

    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
    }

    /// Empty string when absent.
    pub fn str(&self, k: &str) -> &str {
        self.get(k).unwrap_or_default()
    }

    pub fn flag(&self, k: &str) -> bool {
        matches!(self.get(k), Some("true" | "1"))
    }

    /// A non-negative integer parameter; an unparsable value is an error naming the parameter.
    pub fn u64(&self, k: &str) -> Result<Option<u64>, String> {
        match self.get(k) {
            None | Some("") => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| format!("{k}: invalid value {v:?}: must be a non-negative integer")),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn t(g: &str, ns: Option<&str>, p: &str, n: Option<&str>, s: Option<&str>) -> Option<Target> {
        Some(Target {
            group: g.into(),
            version: "v1".into(),
            namespace: ns.map(Into::into),
            plural: p.into(),
            name: n.map(Into::into),
            subresource: s.map(Into::into),
        })
    }

    #[test]
    fn paths() {
        let cases = [
            ("/api/v1/namespaces", t("", None, "namespaces", None, None)),
            (
                "/api/v1/namespaces/x",
                t("", None, "namespaces", Some("x"), None),
            ),
            (
                "/api/v1/namespaces/x/status",
                t("", None, "namespaces", Some("x"), Some("status")),
            ),
            (
                "/api/v1/namespaces/x/pods",
                t("", Some("x"), "pods", None, None),
            ),
            (
                "/api/v1/namespaces/x/pods/",
                t("", Some("x"), "pods", None, None),
            ),
            ("/api/v1/pods", t("", None, "pods", None, None)),
            (
                "/apis/apps/v1/namespaces/d/deployments/a/scale",
                t("apps", Some("d"), "deployments", Some("a"), Some("scale")),
            ),
            ("/apis/apps/v1/namespaces/d/deployments/a/scale/x", None),
            ("/apis/apps", None),
            ("/api//v1/pods", None),
            ("/foo/v1/pods", None),
        ];
        for (p, want) in cases {
            assert_eq!(parse_path(p), want, "{p}");
        }
    }

    #[test]
    fn query() {
        let q = Query::parse(Some("watch=1&limit=5&labelSelector=a%3Db%2Cc")).unwrap();
        assert!(q.flag("watch"));
        assert_eq!(q.u64("limit").unwrap(), Some(5));
        assert_eq!(q.str("labelSelector"), "a=b,c");
        assert!(Query::parse(Some("limit=x")).unwrap().u64("limit").is_err());
    }
}
