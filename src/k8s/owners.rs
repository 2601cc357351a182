//! Owners resolves a signal's target to the workload behind it, as kubernaut does: the
//! first controller ownerReference of a Pod, ReplicaSet or Job is followed, with
//! metadata-only reads, up to `MAX_DEPTH` owners, so that Pod -> ReplicaSet -> Deployment
//! and Pod -> Job -> CronJob end at the Deployment and the CronJob. A Deployment,
//! StatefulSet, DaemonSet, CronJob or Node ends the walk unread; an owner of a kind the
//! adapters do not know (a custom resource) ends it at the last owner we know.
//!
//! What a read found is cached per object (bounded, fresh for `FRESH`): a warm process
//! resolves a known Pod with no request. An object that is gone keeps the answer it had:
//! controller owners do not change, so a signal about a deleted Pod of a Deployment is
//! still counted on the Deployment's RR. A target that is gone and was never resolved
//! here is [`Resolution::Gone`]: it never becomes an RR of its own, because its workload
//! may well have one already.

use std::{num::NonZeroUsize, time::Duration};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::{
    calls::{ApiCalls, KubeError},
    meta::{self, Looked, Ttl},
};
use crate::{
    signal::{Kind, TargetResource, known_kind},
    telemetry,
};

/// MAX_DEPTH bounds the owners followed from one target (kubernaut's limit).
pub const MAX_DEPTH: usize = 5;
/// WALKED are the kinds whose controller is looked up; every other kind is a workload.
const WALKED: [&str; 3] = ["Pod", "ReplicaSet", "Job"];
/// FRESH is how long a read owner is used without reading again.
const FRESH: Duration = Duration::from_secs(600);
/// CAPACITY bounds the objects remembered per process.
const CAPACITY: NonZeroUsize = NonZeroUsize::new(16_384).expect("non-zero");

/// Resolution is the workload a target stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// Workload is what to fingerprint: the top owner, or the target itself.
    Workload(TargetResource),
    /// Gone says the target (or an owner on its chain) does not exist and this process
    /// never resolved it; the message names which.
    Gone(String),
}

/// Key names one object: namespace, kind, name.
type Key = (String, &'static str, String);

/// Owners resolves targets to workloads for one process.
pub struct Owners {
    client: kube::Client,
    /// controllers caches the controller of each object read (None: it has none).
    controllers: Ttl<Key, Option<TargetResource>>,
}

impl Owners {
    /// new builds the resolver.
    #[must_use]
    pub fn new(client: kube::Client) -> Owners {
        Owners {
            client,
            controllers: Ttl::new(CAPACITY, FRESH),
        }
    }

    /// resolve follows `target`'s controller owners to its workload.
    pub async fn resolve(
        &self,
        target: &TargetResource,
        calls: &ApiCalls,
    ) -> Result<Resolution, KubeError> {
        let before = calls.count();
        let resolved = self.walk(target, calls).await;
        let (kind, detail) = match &resolved {
            Ok(Resolution::Workload(w)) if calls.count() == before => (&w.kind, "cached"),
            Ok(Resolution::Workload(w)) => (&w.kind, "read"),
            Ok(Resolution::Gone(_)) => (&target.kind, "gone"),
            Err(e) if e.needs_operator() => (&target.kind, "forbidden"),
            Err(_) => (&target.kind, "error"),
        };
        telemetry::metrics().owner_resolved(kind, detail);
        resolved
    }

    async fn walk(
        &self,
        target: &TargetResource,
        calls: &ApiCalls,
    ) -> Result<Resolution, KubeError> {
        let mut current = target.clone();
        for _ in 0..MAX_DEPTH {
            let Some(kind) = walked(&current.kind) else {
                break;
            };
            let key = (current.namespace.clone(), kind.kind, current.name.clone());
            let controller = match self.controllers.get(&key) {
                Looked::Fresh(c) => c,
                stale => {
                    match meta::read(&self.client, kind, &current.namespace, &current.name, calls)
                        .await?
                    {
                        Some(found) => {
                            let c = controller(&found, &current.namespace);
                            self.controllers.put(key, c.clone());
                            c
                        }
                        // Gone now, but resolved before: its owners have not changed.
                        None => match stale {
                            Looked::Stale(c) => c,
                            _ => return Ok(Resolution::Gone(gone(target, &current))),
                        },
                    }
                }
            };
            match controller {
                Some(owner) => current = owner,
                None => break,
            }
        }
        Ok(Resolution::Workload(current))
    }
}

/// walked is the table row of a kind whose controller is looked up.
fn walked(kind: &str) -> Option<&'static Kind> {
    known_kind(kind).filter(|k| WALKED.contains(&k.kind))
}

/// controller is the first controller ownerReference of an object in `namespace`, when it
/// is of a kind the adapters know (in that kind's API group).
fn controller(meta: &ObjectMeta, namespace: &str) -> Option<TargetResource> {
    let owner = meta
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))?;
    let kind =
        known_kind(&owner.kind).filter(|k| group(k.api_version) == group(&owner.api_version))?;
    Some(TargetResource {
        kind: kind.kind.to_owned(),
        name: owner.name.clone(),
        namespace: if kind.namespaced {
            namespace.to_owned()
        } else {
            String::new()
        },
        api_version: kind.api_version.to_owned(),
    })
}

/// group is the API group of an apiVersion (empty for the core group).
fn group(api_version: &str) -> &str {
    api_version.split_once('/').map_or("", |(g, _)| g)
}

fn gone(target: &TargetResource, missing: &TargetResource) -> String {
    if target == missing {
        format!(
            "{} {}/{} no longer exists, so its workload cannot be resolved",
            target.kind, target.namespace, target.name
        )
    } else {
        format!(
            "{} {}/{} is owned by {} {}, which no longer exists",
            target.kind, target.namespace, target.name, missing.kind, missing.name
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    fn owned_by(refs: &[(&str, &str, &str, Option<bool>)]) -> ObjectMeta {
        ObjectMeta {
            owner_references: Some(
                refs.iter()
                    .map(|(api_version, kind, name, controller)| OwnerReference {
                        api_version: (*api_version).into(),
                        kind: (*kind).into(),
                        name: (*name).into(),
                        controller: *controller,
                        ..OwnerReference::default()
                    })
                    .collect(),
            ),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn the_first_controller_of_a_known_kind_is_the_owner() {
        let meta = owned_by(&[
            ("v1", "ConfigMap", "not-a-controller", None),
            ("apps/v1", "ReplicaSet", "web-7d4b9", Some(true)),
            ("apps/v1", "ReplicaSet", "second", Some(true)),
        ]);
        let owner = controller(&meta, "prod");
        assert_eq!(
            owner,
            Some(TargetResource {
                kind: "ReplicaSet".into(),
                name: "web-7d4b9".into(),
                namespace: "prod".into(),
                api_version: "apps/v1".into(),
            })
        );
    }

    #[test]
    fn unknown_kinds_and_foreign_groups_end_the_walk() {
        let rollout = owned_by(&[("argoproj.io/v1alpha1", "Rollout", "web", Some(true))]);
        assert_eq!(controller(&rollout, "prod"), None);
        let lookalike = owned_by(&[("example.com/v1", "Deployment", "web", Some(true))]);
        assert_eq!(controller(&lookalike, "prod"), None);
        assert_eq!(controller(&ObjectMeta::default(), "prod"), None);
        let not_controller = owned_by(&[("apps/v1", "ReplicaSet", "web", Some(false))]);
        assert_eq!(controller(&not_controller, "prod"), None);
    }

    #[test]
    fn a_mirror_pod_belongs_to_its_node() {
        let mirror = owned_by(&[("v1", "Node", "worker-1", Some(true))]);
        let node = controller(&mirror, "kube-system").unwrap_or_default();
        assert_eq!((node.kind.as_str(), node.namespace.as_str()), ("Node", ""));
    }

    #[test]
    fn only_pods_replicasets_and_jobs_are_walked() {
        for kind in ["Pod", "pod", "ReplicaSet", "Job"] {
            assert!(walked(kind).is_some(), "{kind}");
        }
        for kind in [
            "Deployment",
            "StatefulSet",
            "DaemonSet",
            "CronJob",
            "Node",
            "Rollout",
        ] {
            assert!(walked(kind).is_none(), "{kind}");
        }
    }
}
