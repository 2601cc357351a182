//! Scope decides, as kubernaut does, whether a workload is kubernaut's to remediate
//! (`GATEWAY_SCOPE=managed`): the label `kubernaut.ai/managed` on the resource decides when
//! it is `true` or `false` (so an opt-out on the resource beats its namespace); without it,
//! a cluster-scoped resource is unmanaged and a namespaced one follows its namespace's
//! label (`true` manages; absent, any other value, or no such namespace does not).
//!
//! Labels are read metadata-only and cached per object for `FRESH`, so a repeated signal
//! costs no request; a label change takes effect within that time.

use std::{num::NonZeroUsize, time::Duration};

use super::{
    calls::{ApiCalls, KubeError},
    meta::{self, Looked, Ttl},
};
use crate::signal::{Kind, TargetResource, known_kind};

/// MANAGED is kubernaut's scope label.
pub const MANAGED: &str = "kubernaut.ai/managed";
/// FRESH is how long a label read is used without reading again.
const FRESH: Duration = Duration::from_secs(30);
/// CAPACITY bounds the objects whose label is remembered.
const CAPACITY: NonZeroUsize = NonZeroUsize::new(16_384).expect("non-zero");

/// Key names one object: namespace (empty when cluster-scoped), kind, name.
type Key = (String, &'static str, String);

/// Scope reads and caches the scope labels of one process.
pub struct Scope {
    client: kube::Client,
    /// labels caches the value of `MANAGED` on each object read (None: absent or no object).
    labels: Ttl<Key, Option<String>>,
}

impl Scope {
    /// new builds the scope check.
    #[must_use]
    pub fn new(client: kube::Client) -> Scope {
        Scope {
            client,
            labels: Ttl::new(CAPACITY, FRESH),
        }
    }

    /// managed reports whether kubernaut manages `target`.
    pub async fn managed(
        &self,
        target: &TargetResource,
        calls: &ApiCalls,
    ) -> Result<bool, KubeError> {
        if let Some(kind) = known_kind(&target.kind) {
            let namespace = if kind.namespaced {
                target.namespace.as_str()
            } else {
                ""
            };
            let own = self.label(kind, namespace, &target.name, calls).await?;
            if let Some(decided) = decides(own.as_deref()) {
                return Ok(decided);
            }
            if !kind.namespaced {
                return Ok(false);
            }
        }
        if target.namespace.is_empty() {
            return Ok(false);
        }
        let namespace = known_kind("Namespace").ok_or_else(|| KubeError::Unusable {
            op: "reading namespaces",
            name: target.namespace.clone(),
            message: "the Namespace kind is missing from the kinds table".into(),
        })?;
        let label = self.label(namespace, "", &target.namespace, calls).await?;
        Ok(decides(label.as_deref()).unwrap_or(false))
    }

    async fn label(
        &self,
        kind: &'static Kind,
        namespace: &str,
        name: &str,
        calls: &ApiCalls,
    ) -> Result<Option<String>, KubeError> {
        let key = (namespace.to_owned(), kind.kind, name.to_owned());
        if let Looked::Fresh(value) = self.labels.get(&key) {
            return Ok(value);
        }
        let value = meta::read(&self.client, kind, namespace, name, calls)
            .await?
            .and_then(|m| m.labels?.remove(MANAGED));
        self.labels.put(key, value.clone());
        Ok(value)
    }
}

/// decides reads a scope label: only exactly `true` and `false` decide.
fn decides(label: Option<&str>) -> Option<bool> {
    match label {
        Some("true") => Some(true),
        Some("false") => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_exact_true_and_false_decide() {
        assert_eq!(decides(Some("true")), Some(true));
        assert_eq!(decides(Some("false")), Some(false));
        for undecided in [None, Some(""), Some("True"), Some("yes"), Some("1")] {
            assert_eq!(decides(undecided), None, "{undecided:?}");
        }
    }
}
