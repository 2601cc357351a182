//! Raw is the baseline: with no gateway, it issues exactly the Kubernetes requests the
//! gateway issues for a new RR and for a duplicate (the budgets tests/e2e/fence.rs
//! asserts), with the same client library and identity, and bodies copied from objects a
//! gateway wrote. What the gateway costs beyond the API server's own work is then the
//! ratio of the two under the same load.
//!
//! - new: GET the fence record (404), LIST the fingerprint's RRs, POST the record, POST
//!   the RR, PATCH its status;
//! - duplicate: GET the RR, PATCH its status.

use std::time::Instant;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use serde_json::{Value, json};

use crate::BoxError;
use crate::load::Answer;

const FIELD_MANAGER: &str = "signal-gateway";

/// Raw holds the templates of one fence record and one RR, and the APIs to write copies.
#[derive(Clone)]
pub struct Raw {
    rrs: Api<DynamicObject>,
    leases: Api<Lease>,
    /// rr and lease are JSON texts in which `fp` stands for the fingerprint.
    rr: String,
    lease: String,
    fp: String,
    /// ns is the namespace the requests go to.
    ns: String,
}

fn rr_resource() -> ApiResource {
    let gvk = GroupVersionKind::gvk("kubernaut.ai", "v1alpha1", "RemediationRequest");
    ApiResource::from_gvk_with_plural(&gvk, "remediationrequests")
}

/// template is `object` as a client would send it: no server-set metadata, no status.
fn template(mut object: Value) -> Value {
    if let Some(meta) = object["metadata"].as_object_mut() {
        for k in [
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "managedFields",
            "generation",
            "selfLink",
        ] {
            meta.remove(k);
        }
    }
    if let Some(o) = object.as_object_mut() {
        o.remove("status");
    }
    object
}

impl Raw {
    /// from_gateway copies the RR `rr-<fp>-1` and the record `sg-<fp>` that a gateway wrote
    /// in `ns` as templates; `client` writes the copies into `into`.
    pub async fn from_gateway(
        client: &kube::Client,
        ns: &str,
        fp: &str,
        into: &str,
    ) -> Result<Raw, BoxError> {
        let ar = rr_resource();
        let read_rrs = Api::<DynamicObject>::namespaced_with(client.clone(), ns, &ar);
        let read_leases = Api::<Lease>::namespaced(client.clone(), ns);
        let rr = read_rrs.get(&format!("rr-{fp}-1")).await?;
        let lease = read_leases.get(&format!("sg-{fp}")).await?;
        let retarget = |mut v: Value| {
            v["metadata"]["namespace"] = json!(into);
            serde_json::to_string(&template(v))
        };
        Ok(Raw {
            rrs: Api::namespaced_with(client.clone(), into, &ar),
            leases: Api::namespaced(client.clone(), into),
            rr: retarget(serde_json::to_value(rr)?)?,
            lease: retarget(serde_json::to_value(lease)?)?,
            fp: fp.to_owned(),
            ns: into.to_owned(),
        })
    }

    /// retargeted is this client sending the same requests into namespace `ns`.
    #[must_use]
    pub fn retargeted(&self, client: &kube::Client, ns: &str) -> Raw {
        let (from, to) = (
            format!("\"namespace\":\"{}\"", self.ns),
            format!("\"namespace\":\"{ns}\""),
        );
        Raw {
            rrs: Api::namespaced_with(client.clone(), ns, &rr_resource()),
            leases: Api::namespaced(client.clone(), ns),
            rr: self.rr.replace(&from, &to),
            lease: self.lease.replace(&from, &to),
            fp: self.fp.clone(),
            ns: ns.to_owned(),
        }
    }

    fn copy<T: serde::de::DeserializeOwned>(&self, text: &str, fp: &str) -> Result<T, BoxError> {
        Ok(serde_json::from_str(&text.replace(&self.fp, fp))?)
    }

    /// new_rr writes a new RR for `fp` the way the gateway does; the answer's status is
    /// 201, or 0 when a step failed.
    pub async fn new_rr(&self, fp: &str, from: Instant) -> Answer {
        let status = match self.new_steps(fp).await {
            Ok(()) => 201,
            Err(_) => 0,
        };
        Answer {
            status,
            latency: from.elapsed(),
        }
    }

    async fn new_steps(&self, fp: &str) -> Result<(), BoxError> {
        let record = format!("sg-{fp}");
        if self.leases.get_opt(&record).await?.is_some() {
            return Err(format!("{record} exists").into());
        }
        let lp = ListParams::default().fields(&format!("spec.signalFingerprint={fp}"));
        self.rrs.list(&lp).await?;
        let pp = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PostParams::default()
        };
        self.leases
            .create(&pp, &self.copy::<Lease>(&self.lease, fp)?)
            .await?;
        let rr = self
            .rrs
            .create(&pp, &self.copy::<DynamicObject>(&self.rr, fp)?)
            .await?;
        self.count(&rr, 1).await
    }

    /// duplicate counts a repeat on the RR of `fp` the way the gateway does; 202, or 0.
    pub async fn duplicate(&self, fp: &str, from: Instant) -> Answer {
        let status = match self.duplicate_steps(fp).await {
            Ok(()) => 202,
            Err(_) => 0,
        };
        Answer {
            status,
            latency: from.elapsed(),
        }
    }

    async fn duplicate_steps(&self, fp: &str) -> Result<(), BoxError> {
        let rr = self.rrs.get(&format!("rr-{fp}-1")).await?;
        let count = rr.data["status"]["deduplication"]["occurrenceCount"]
            .as_i64()
            .unwrap_or(0);
        self.count(&rr, count + 1).await
    }

    /// count writes the occurrence count with the resourceVersion read, as the gateway's
    /// status patch does.
    async fn count(&self, rr: &DynamicObject, count: i64) -> Result<(), BoxError> {
        let name = rr.metadata.name.clone().unwrap_or_default();
        let now = now();
        let first = rr.data["status"]["deduplication"]["firstSeenAt"]
            .as_str()
            .map_or_else(|| now.clone(), str::to_owned);
        let patch = json!({
            "metadata": { "resourceVersion": rr.metadata.resource_version },
            "status": { "deduplication": {
                "firstSeenAt": first, "lastSeenAt": now, "occurrenceCount": count,
            }},
        });
        let pp = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        self.rrs
            .patch_status(&name, &pp, &Patch::Merge(&patch))
            .await?;
        Ok(())
    }
}

/// now is the current time as the API server stores it (RFC 3339, seconds).
fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}
