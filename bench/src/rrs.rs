//! RemediationRequests creates and lists RemediationRequests with the admin client, outside
//! any measured phase.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::BoxError;

/// CROWD_CONCURRENCY bounds the creates in flight while crowding a namespace.
pub const CROWD_CONCURRENCY: usize = 48;
/// TERMINAL are the phases after which an RR is no longer active.
const TERMINAL: [&str; 5] = ["Completed", "Failed", "TimedOut", "Skipped", "Cancelled"];
/// PAGE is the page size of a list.
const PAGE: usize = 500;

fn collection(ns: &str) -> String {
    format!("/apis/kubernaut.ai/v1alpha1/namespaces/{ns}/remediationrequests")
}

/// filler is the `i`th other RR: a valid RR about a pod no bench signal
/// names, with a fingerprint of its own.
fn filler(i: usize) -> Value {
    json!({
        "apiVersion": "kubernaut.ai/v1alpha1",
        "kind": "RemediationRequest",
        "metadata": {"name": format!("filler-{i}")},
        "spec": {
            "signalFingerprint": format!("{i:064x}"),
            "targetType": "kubernetes",
            "signalName": "KubePodCrashLooping",
            "severity": "warning",
            "signalType": "alert",
            "signalSource": "alertmanager",
            "targetResource": {"kind": "Pod", "name": format!("filler-{i}"), "namespace": "prod", "apiVersion": "v1"},
            "firingTime": "2026-11-27T08:00:00Z",
            "receivedTime": "2026-11-27T08:00:00Z",
            "signalLabels": {"alertname": "KubePodCrashLooping", "pod": format!("filler-{i}")},
        }
    })
}

/// crowd creates `n` other RRs in `ns`, a bounded number at a time.
pub async fn crowd(client: &kube::Client, ns: &str, n: usize) -> Result<(), BoxError> {
    let limit = Arc::new(Semaphore::new(CROWD_CONCURRENCY));
    let mut tasks = JoinSet::new();
    for i in 0..n {
        let permit = Arc::clone(&limit).acquire_owned().await?;
        let (client, url) = (client.clone(), collection(ns));
        tasks.spawn(async move {
            let _permit = permit;
            let req = http::Request::post(url)
                .header("content-type", "application/json")
                .body(filler(i).to_string().into_bytes())?;
            client
                .request_text(req)
                .await
                .map_err(|e| format!("creating filler-{i}: {e}"))?;
            Ok::<(), BoxError>(())
        });
        while let Some(done) = tasks.try_join_next() {
            done??;
        }
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(())
}

/// Rr is what the bench reads of one RR.
struct Rr {
    fingerprint: String,
    kind: String,
    target: String,
    active: bool,
    occurrences: u64,
}

/// Listed is every RR of a namespace.
pub struct Listed {
    rrs: Vec<Rr>,
}

impl Listed {
    /// duplicates counts active RRs beyond one per fingerprint.
    pub fn duplicates(&self) -> u64 {
        let mut active = BTreeMap::<&str, u64>::new();
        for rr in self.rrs.iter().filter(|r| r.active) {
            *active.entry(&rr.fingerprint).or_default() += 1;
        }
        active.values().map(|n| n.saturating_sub(1)).sum()
    }

    /// occurrences_of sums the occurrence counts of the RRs about the pods
    /// fleet `fleet` was sent (`<fleet>-<i>`, and `warmup-<fleet>-<i>`).
    pub fn occurrences_of(&self, fleet: &str) -> u64 {
        let (own, warm) = (format!("{fleet}-"), format!("warmup-{fleet}-"));
        self.rrs
            .iter()
            .filter(|r| r.target.starts_with(&own) || r.target.starts_with(&warm))
            .map(|r| r.occurrences)
            .sum()
    }

    /// about counts the RRs whose target is one of the Deployments `names`, and sums
    /// their occurrence counts.
    pub fn about(&self, names: &BTreeSet<&str>) -> (u64, u64) {
        self.rrs
            .iter()
            .filter(|r| r.kind == "Deployment" && names.contains(r.target.as_str()))
            .fold((0, 0), |(n, sum), r| (n + 1, sum + r.occurrences))
    }

    /// about_pod counts the RRs whose target is Pod `name`, and sums their occurrence counts.
    pub fn about_pod(&self, name: &str) -> (u64, u64) {
        self.rrs
            .iter()
            .filter(|r| r.kind == "Pod" && r.target == name)
            .fold((0, 0), |(n, sum), r| (n + 1, sum + r.occurrences))
    }

    /// by_target sums, per target name, the active RRs and the occurrence counts of all.
    pub fn by_target(&self) -> BTreeMap<String, (u64, u64)> {
        let mut by = BTreeMap::<String, (u64, u64)>::new();
        for rr in &self.rrs {
            let e = by.entry(rr.target.clone()).or_default();
            e.0 += u64::from(rr.active);
            e.1 += rr.occurrences;
        }
        by
    }

    /// fingerprints lists the RRs' fingerprints.
    pub fn fingerprints(&self) -> Vec<&str> {
        self.rrs.iter().map(|r| r.fingerprint.as_str()).collect()
    }

    /// of_kind counts the RRs whose target is of kind `kind`.
    pub fn of_kind(&self, kind: &str) -> u64 {
        self.rrs.iter().filter(|r| r.kind == kind).count() as u64
    }
}

/// fence_records counts the gateways' fence records (the Leases `sg-<fingerprint>`) in
/// `ns`, a page at a time.
pub async fn fence_records(client: &kube::Client, ns: &str) -> Result<u64, BoxError> {
    let mut n = 0;
    let mut token = String::new();
    loop {
        let mut url = format!("/apis/coordination.k8s.io/v1/namespaces/{ns}/leases?limit={PAGE}");
        if !token.is_empty() {
            url.push_str(&format!("&continue={token}"));
        }
        let text = client
            .request_text(http::Request::get(url).body(Vec::new())?)
            .await
            .map_err(|e| format!("listing Leases in {ns}: {e}"))?;
        let page: Value = serde_json::from_str(&text)?;
        n += page["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|l| {
                l["metadata"]["name"]
                    .as_str()
                    .is_some_and(|name| name.starts_with("sg-"))
            })
            .count() as u64;
        token = page["metadata"]["continue"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        if token.is_empty() {
            return Ok(n);
        }
    }
}

/// list reads every RR of `ns`, a page at a time.
pub async fn list(client: &kube::Client, ns: &str) -> Result<Listed, BoxError> {
    let mut rrs = Vec::new();
    let mut token = String::new();
    loop {
        let mut url = format!("{}?limit={PAGE}", collection(ns));
        if !token.is_empty() {
            url.push_str(&format!("&continue={token}"));
        }
        let text = client
            .request_text(http::Request::get(url).body(Vec::new())?)
            .await
            .map_err(|e| format!("listing RRs in {ns}: {e}"))?;
        let page: Value = serde_json::from_str(&text)?;
        for item in page["items"].as_array().into_iter().flatten() {
            let phase = item["status"]["overallPhase"].as_str().unwrap_or("");
            rrs.push(Rr {
                fingerprint: item["spec"]["signalFingerprint"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned(),
                kind: item["spec"]["targetResource"]["kind"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned(),
                target: item["spec"]["targetResource"]["name"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned(),
                active: !TERMINAL.contains(&phase),
                occurrences: item["status"]["deduplication"]["occurrenceCount"]
                    .as_u64()
                    .unwrap_or(0),
            });
        }
        token = page["metadata"]["continue"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        if token.is_empty() {
            return Ok(Listed { rrs });
        }
    }
}
