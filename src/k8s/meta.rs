//! Meta reads the metadata of one object of a known kind (owners and labels, never the
//! spec), and keeps what it read in a bounded cache with a time to live.

use std::{
    hash::Hash,
    num::NonZeroUsize,
    sync::Mutex,
    time::{Duration, Instant},
};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{
    Api,
    api::{ApiResource, DynamicObject, GroupVersionKind},
};
use lru::LruCache;

use super::calls::{ApiCalls, KubeError, Op};
use crate::signal::Kind;

/// read gets the metadata of `kind` `name` in `namespace` (empty for cluster-scoped kinds);
/// None means it does not exist.
pub(crate) async fn read(
    client: &kube::Client,
    kind: &'static Kind,
    namespace: &str,
    name: &str,
    calls: &ApiCalls,
) -> Result<Option<ObjectMeta>, KubeError> {
    let (group, version) = kind
        .api_version
        .split_once('/')
        .unwrap_or(("", kind.api_version));
    let gvk = GroupVersionKind::gvk(group, version, kind.kind);
    let resource = ApiResource::from_gvk_with_plural(&gvk, kind.plural);
    let api: Api<DynamicObject> = if kind.namespaced {
        Api::namespaced_with(client.clone(), namespace, &resource)
    } else {
        Api::all_with(client.clone(), &resource)
    };
    let op = Op::ReadMetadata(kind);
    calls
        .read(op, name, || api.get_metadata_opt(name))
        .await?
        .map(|found| found.map(|m| m.metadata))
        .map_err(|e| op.failed(name, e))
}

/// Ttl is a bounded cache whose entries are fresh for `ttl` and kept, stale, until evicted
/// (least recently used first).
pub(crate) struct Ttl<K: Hash + Eq, V> {
    entries: Mutex<LruCache<K, (V, Instant)>>,
    ttl: Duration,
}

/// Looked is what the cache knows of a key.
pub(crate) enum Looked<V> {
    Fresh(V),
    Stale(V),
    Absent,
}

impl<K: Hash + Eq, V: Clone> Ttl<K, V> {
    /// new builds a cache of at most `capacity` entries.
    pub(crate) fn new(capacity: NonZeroUsize, ttl: Duration) -> Ttl<K, V> {
        Ttl {
            entries: Mutex::new(LruCache::new(capacity)),
            ttl,
        }
    }

    /// get looks `key` up.
    pub(crate) fn get(&self, key: &K) -> Looked<V> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        match entries.get(key) {
            Some((v, at)) if at.elapsed() < self.ttl => Looked::Fresh(v.clone()),
            Some((v, _)) => Looked::Stale(v.clone()),
            None => Looked::Absent,
        }
    }

    /// put remembers `value` for `key` from now on.
    pub(crate) fn put(&self, key: K, value: V) {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .put(key, (value, Instant::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_turn_stale_and_the_oldest_is_evicted() {
        let cache = Ttl::new(NonZeroUsize::MIN.saturating_add(1), Duration::ZERO);
        cache.put(1, "a");
        assert!(matches!(cache.get(&1), Looked::Stale("a")));
        let fresh = Ttl::new(NonZeroUsize::MIN.saturating_add(1), Duration::from_secs(60));
        fresh.put(1, "a");
        fresh.put(2, "b");
        assert!(matches!(fresh.get(&1), Looked::Fresh("a")));
        fresh.put(3, "c");
        assert!(
            matches!(fresh.get(&2), Looked::Absent),
            "2 was used least recently"
        );
        assert!(matches!(fresh.get(&1), Looked::Fresh("a")));
    }
}
