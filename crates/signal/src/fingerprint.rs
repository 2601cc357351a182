//! Fingerprint identifies the resource a signal is about.

use std::fmt;

use sha2::{Digest, Sha256};

use super::TargetResource;

/// Fingerprint is the lowercase hex SHA-256 that identifies the resource a signal is about.
///
/// The hashed text is `namespace:Kind:name`, or `cluster_id:namespace:Kind:name`
/// when a cluster id is configured. `namespace` is empty for cluster-scoped
/// kinds. The alert name is deliberately not part of it, so that several alerts
/// about one workload lead to one remediation. The plain `:` join is
/// unambiguous because adapters only accept DNS-1123 names and namespaces and
/// alphanumeric kinds, none of which can contain `:`; a cluster id may contain
/// `:` because it is always the prefix before the last three fields.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(String);

impl Fingerprint {
    /// of computes the fingerprint of a target resource, optionally scoped to a cluster.
    ///
    /// An empty cluster id counts as no cluster id.
    #[must_use]
    pub fn of(cluster_id: Option<&str>, target: &TargetResource) -> Fingerprint {
        let mut hasher = Sha256::new();
        if let Some(cluster) = cluster_id.filter(|c| !c.is_empty()) {
            hasher.update(cluster.as_bytes());
            hasher.update(b":");
        }
        hasher.update(target.namespace.as_bytes());
        hasher.update(b":");
        hasher.update(target.kind.as_bytes());
        hasher.update(b":");
        hasher.update(target.name.as_bytes());
        Fingerprint(hex::encode(hasher.finalize()))
    }

    /// parse accepts exactly 64 lowercase hex characters.
    #[cfg(test)]
    #[must_use]
    pub fn parse(s: &str) -> Option<Fingerprint> {
        let valid = s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        valid.then(|| Fingerprint(s.to_owned()))
    }

    /// as_str returns the 64 hex characters.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Fingerprint {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl From<Fingerprint> for String {
    fn from(fp: Fingerprint) -> String {
        fp.0
    }
}

impl serde::Serialize for Fingerprint {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn fingerprint_is_pinned_sha256_of_namespace_kind_name() {
        // printf 'prod:Pod:web-0' | sha256sum
        let fp = Fingerprint::of(None, &TargetResource::pod("prod", "web-0"));
        assert_eq!(
            fp.as_str(),
            "07b7277eee612d0d04d9791f58c16b342e0d1140b3eda071cd2a25a476777e3f"
        );
        // printf 'eu-1:prod:Pod:web-0' | sha256sum
        let fp = Fingerprint::of(Some("eu-1"), &TargetResource::pod("prod", "web-0"));
        assert_eq!(
            fp.as_str(),
            "695282e3b5fc66c24daa6ea0e3d63e5033556b4433090e2bef0e1c76377f03bb"
        );
    }

    #[test]
    fn fingerprint_is_64_lowercase_hex_and_round_trips() {
        let fp = Fingerprint::of(Some("c"), &TargetResource::pod("ns", "p"));
        assert_eq!(fp.as_str().len(), 64);
        assert!(
            fp.as_str()
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
        assert_eq!(Fingerprint::parse(fp.as_str()), Some(fp.clone()));
        assert_eq!(fp.to_string(), fp.as_str());
        assert_eq!(
            serde_json::to_value(&fp).ok(),
            Some(Value::String(fp.to_string()))
        );
    }

    #[test]
    fn fingerprint_ignores_api_version_and_depends_on_identity() {
        let base = Fingerprint::of(None, &TargetResource::pod("prod", "web-0"));
        let mut other_version = TargetResource::pod("prod", "web-0");
        other_version.api_version = String::new();
        assert_eq!(Fingerprint::of(None, &other_version), base);
        assert_ne!(
            Fingerprint::of(None, &TargetResource::pod("prod", "web-1")),
            base
        );
        assert_ne!(
            Fingerprint::of(None, &TargetResource::pod("staging", "web-0")),
            base
        );
        assert_ne!(
            Fingerprint::of(Some("a"), &TargetResource::pod("prod", "web-0")),
            base
        );
        assert_ne!(
            Fingerprint::of(Some("a"), &TargetResource::pod("prod", "web-0")),
            Fingerprint::of(Some("b"), &TargetResource::pod("prod", "web-0"))
        );
        assert_eq!(
            Fingerprint::of(Some(""), &TargetResource::pod("prod", "web-0")),
            base
        );
    }

    #[test]
    fn fingerprint_parse_rejects_anything_but_64_lowercase_hex() {
        let upper = "07B7277EEE612D0D04D9791F58C16B342E0D1140B3EDA071CD2A25A476777E3F";
        for bad in [
            "",
            "abc",
            upper,
            &"g".repeat(64),
            &"a".repeat(63),
            &"a".repeat(65),
            &"é".repeat(32),
        ] {
            assert_eq!(Fingerprint::parse(bad), None, "{bad:?} must not parse");
        }
    }
}
