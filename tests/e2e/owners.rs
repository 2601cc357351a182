//! One RR per problem as kubernaut means it, on a control plane with kubernaut's own
//! RemediationRequest CRD (`../shared/kubernaut/`): signals about Pods are resolved to the
//! workload that owns them, an RR in one of the orchestrator's hold states keeps counting,
//! `GATEWAY_SCOPE=managed` refuses what kubernaut does not manage, and the request budget
//! with owner resolution on. The steps share one private control plane, in order, so that
//! the API server's request counters see each step's requests alone. Separately, on the
//! shared control plane with this project's CRD: an RR carrying the whole status kubernaut's
//! orchestrator writes survives the gateway's counting.

use std::collections::BTreeMap;

use k8s_openapi::{
    NamespaceResourceScope,
    api::{
        apps::v1::{Deployment, ReplicaSet, StatefulSet},
        batch::v1::{CronJob, Job},
        core::v1::{Namespace, Pod, ServiceAccount},
    },
};
use kube::{
    Api, Resource,
    api::{DynamicObject, ListParams, Patch, PatchParams, PostParams},
    core::{ApiResource, GroupVersionKind},
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::{Value, json};
use signal_gateway::{pipeline::rr_name, signal::Fingerprint, signal::TargetResource};
use testenv::ControlPlane;

use crate::fence::{breakdown, cost};
use crate::support::{in_process, post, setup};

/// kubernaut_plane starts a control plane with kubernaut's CRD, as kubernaut installs it.
async fn kubernaut_plane() -> ControlPlane {
    let path =
        testenv::repo_root().join("../shared/kubernaut/remediationrequests.kubernaut.ai.yaml");
    let crd = testenv::read_crd(&path)
        .unwrap_or_else(|e| panic!("reading kubernaut's CRD at {}: {e}", path.display()));
    let cp = ControlPlane::start()
        .await
        .expect("starting a private control plane");
    cp.install_crd(crd)
        .await
        .expect("installing kubernaut's CRD");
    cp
}

/// rr_resource is the RemediationRequest resource as kubernaut's CRD serves it.
pub(crate) fn rr_resource() -> ApiResource {
    let gvk = GroupVersionKind::gvk("kubernaut.ai", "v1alpha1", "RemediationRequest");
    ApiResource::from_gvk_with_plural(&gvk, "remediationrequests")
}

/// stored_rrs lists the RRs of `ns` as kubernaut's CRD stores them.
async fn stored_rrs(cp: &ControlPlane, ns: &str) -> Vec<Value> {
    let api: Api<DynamicObject> = Api::namespaced_with(cp.admin_client(), ns, &rr_resource());
    let mut list: Vec<Value> = api
        .list(&ListParams::default())
        .await
        .expect("listing RRs")
        .items
        .into_iter()
        .map(|o| serde_json::to_value(o).unwrap_or_default())
        .collect();
    list.sort_by_key(|rr| {
        rr["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    });
    list
}

/// ro_writes patches an RR's status as kubernaut's orchestrator would.
async fn ro_writes(cp: &ControlPlane, ns: &str, name: &str, status: Value) {
    let api: Api<DynamicObject> = Api::namespaced_with(cp.admin_client(), ns, &rr_resource());
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(&json!({ "status": status })),
    )
    .await
    .unwrap_or_else(|e| panic!("writing the status of {name}: {e}"));
}

/// make creates an object from JSON, as the admin.
async fn make<K>(cp: &ControlPlane, ns: &str, object: Value) -> K
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug,
{
    let object: K = serde_json::from_value(object).expect("a valid object");
    Api::<K>::namespaced(cp.admin_client(), ns)
        .create(&PostParams::default(), &object)
        .await
        .unwrap_or_else(|e| panic!("creating {} in {ns}: {e}", K::kind(&())))
}

/// owner is a controller ownerReference to `object`.
fn owner<K: Resource<DynamicType = ()>>(object: &K) -> Value {
    json!([{
        "apiVersion": K::api_version(&()), "kind": K::kind(&()),
        "name": object.meta().name, "uid": object.meta().uid,
        "controller": true, "blockOwnerDeletion": true,
    }])
}

fn pod_spec() -> Value {
    json!({"containers": [{"name": "app", "image": "registry.example/app:1"}],
           "automountServiceAccountToken": false})
}

/// template is a Pod template; `restart` is the restartPolicy (Jobs may not use `Always`).
fn template(app: &str, restart: &str) -> Value {
    let mut spec = pod_spec();
    spec["restartPolicy"] = json!(restart);
    json!({"metadata": {"labels": {"app": app}}, "spec": spec})
}

/// pod creates Pod `name` owned by `owners` (a JSON list, or null for a bare Pod).
async fn pod(cp: &ControlPlane, ns: &str, name: &str, owners: Value) -> Pod {
    make(
        cp,
        ns,
        json!({"metadata": {"name": name, "ownerReferences": owners}, "spec": pod_spec()}),
    )
    .await
}

/// deployment creates Deployment `name`, its ReplicaSet and `pods` Pods of it.
async fn deployment(cp: &ControlPlane, ns: &str, name: &str, pods: usize) -> Vec<String> {
    let selector = json!({"matchLabels": {"app": name}});
    let d: Deployment = make(
        cp,
        ns,
        json!({"metadata": {"name": name},
               "spec": {"selector": selector, "template": template(name, "Always")}}),
    )
    .await;
    let rs: ReplicaSet = make(
        cp,
        ns,
        json!({"metadata": {"name": format!("{name}-7d4b9c6f8"), "ownerReferences": owner(&d)},
               "spec": {"selector": selector, "template": template(name, "Always")}}),
    )
    .await;
    let mut names = Vec::new();
    for i in 0..pods {
        let p = format!("{name}-7d4b9c6f8-x{i}");
        pod(cp, ns, &p, owner(&rs)).await;
        names.push(p);
    }
    names
}

/// alert is a firing Alertmanager alert about Pod `pod` in `ns`.
fn alert(ns: &str, pod: &str) -> Value {
    json!({
        "status": "firing",
        "labels": {"alertname": "KubePodCrashLooping", "namespace": ns, "pod": pod, "severity": "critical"},
        "annotations": {"summary": "Pod is crash looping."},
        "startsAt": "2026-11-27T08:14:27.613Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "fingerprint": "a3f9c2d18e4b7056"
    })
}

fn webhook(alerts: Vec<Value>) -> String {
    json!({"version": "4", "status": "firing", "receiver": "signal-gateway",
           "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
           "externalURL": "http://alertmanager:9093", "alerts": alerts})
    .to_string()
}

/// fp is the fingerprint of `kind` `name` in `ns`.
fn fp(ns: &str, kind: &str, name: &str) -> String {
    let target = TargetResource {
        kind: kind.into(),
        name: name.into(),
        namespace: ns.into(),
        api_version: String::new(),
    };
    Fingerprint::of(None, &target).to_string()
}

/// target is what an RR's spec says it is about: (kind, name).
fn target(rr: &Value) -> (String, String) {
    let t = &rr["spec"]["targetResource"];
    let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    (s(&t["kind"]), s(&t["name"]))
}

fn count(rr: &Value) -> i64 {
    rr["status"]["deduplication"]["occurrenceCount"]
        .as_i64()
        .unwrap_or(0)
}

/// resolving is a gateway in `ns` with owner resolution on.
async fn resolving(cp: &ControlPlane, ns: &str, extra: &[(&str, &str)]) -> axum::Router {
    let mut vars = vec![("GATEWAY_OWNER_RESOLUTION", "true")];
    vars.extend_from_slice(extra);
    in_process(cp, ns, &vars).await
}

/// namespace creates a test namespace with its default ServiceAccount (no controller
/// manager runs here to make it), for Pods to be admitted.
async fn namespace(cp: &ControlPlane) -> testenv::TestNamespace {
    let ns = cp.new_namespace().await.expect("a test namespace");
    let _: ServiceAccount = make(cp, ns.name(), json!({"metadata": {"name": "default"}})).await;
    ns
}

#[tokio::test]
async fn under_kubernauts_crd() {
    let cp = kubernaut_plane().await;
    three_pods_of_a_deployment_are_one_rr_targeting_it(&cp).await;
    statefulset_cronjob_and_bare_pods_resolve_as_kubernaut_does(&cp).await;
    a_pod_that_is_gone_counts_on_its_known_workload_and_is_refused_otherwise(&cp).await;
    each_hold_state_counts_or_opens_as_kubernauts_gateway(&cp).await;
    scope_managed_refuses_what_kubernaut_does_not_manage(&cp).await;
    owner_resolution_keeps_the_request_budget(&cp).await;
    crate::kubernaut::rrs_written_by_the_gateway_are_valid(&cp).await;
}

async fn three_pods_of_a_deployment_are_one_rr_targeting_it(cp: &ControlPlane) {
    let ns = namespace(cp).await;
    let ns = ns.name();
    let pods = deployment(cp, ns, "payments", 3).await;
    let app = resolving(cp, ns, &[]).await;
    let (status, body) = post(&app, webhook(pods.iter().map(|p| alert(ns, p)).collect())).await;
    assert_eq!(status, 201, "{body}");
    let want = fp(ns, "Deployment", "payments");
    for r in body["results"].as_array().expect("results") {
        assert_eq!(r["fingerprint"], want.as_str(), "{body}");
    }
    let list = stored_rrs(cp, ns).await;
    assert_eq!(list.len(), 1, "one RR for one Deployment: {list:?}");
    assert_eq!(target(&list[0]), ("Deployment".into(), "payments".into()));
    assert_eq!(list[0]["spec"]["targetResource"]["namespace"], ns);
    assert_eq!(list[0]["spec"]["signalFingerprint"], want.as_str());
    assert_eq!(count(&list[0]), 3, "counted three times");
    // The same three Pods again, one request each: still one RR.
    for p in &pods {
        let (status, body) = post(&app, webhook(vec![alert(ns, p)])).await;
        assert_eq!(
            (status, &body["results"][0]["status"]),
            (202, &json!("duplicate"))
        );
    }
    let list = stored_rrs(cp, ns).await;
    assert_eq!((list.len(), count(&list[0])), (1, 6));
}

async fn statefulset_cronjob_and_bare_pods_resolve_as_kubernaut_does(cp: &ControlPlane) {
    let ns = namespace(cp).await;
    let ns = ns.name();
    let selector = json!({"matchLabels": {"app": "db"}});
    let sts: StatefulSet = make(
        cp,
        ns,
        json!({"metadata": {"name": "db"},
               "spec": {"selector": selector, "serviceName": "db", "template": template("db", "Always")}}),
    )
    .await;
    pod(cp, ns, "db-0", owner(&sts)).await;
    let cron: CronJob = make(
        cp,
        ns,
        json!({"metadata": {"name": "nightly"},
               "spec": {"schedule": "0 3 * * *",
                        "jobTemplate": {"spec": {"template": template("nightly", "Never")}}}}),
    )
    .await;
    let job: Job = make(
        cp,
        ns,
        json!({"metadata": {"name": "nightly-29000000", "ownerReferences": owner(&cron)},
               "spec": {"template": template("nightly", "Never")}}),
    )
    .await;
    pod(cp, ns, "nightly-29000000-abcde", owner(&job)).await;
    pod(cp, ns, "debug", Value::Null).await;
    let app = resolving(cp, ns, &[]).await;
    let alerts = ["db-0", "nightly-29000000-abcde", "debug"]
        .map(|p| alert(ns, p))
        .to_vec();
    let (status, body) = post(&app, webhook(alerts)).await;
    assert_eq!(status, 201, "{body}");
    let targets: Vec<(String, String)> = stored_rrs(cp, ns).await.iter().map(target).collect();
    let mut want = vec![
        ("CronJob".to_owned(), "nightly".to_owned()),
        ("Pod".to_owned(), "debug".to_owned()),
        ("StatefulSet".to_owned(), "db".to_owned()),
    ];
    let mut got = targets.clone();
    got.sort();
    want.sort();
    assert_eq!(got, want, "{body}");
}

async fn a_pod_that_is_gone_counts_on_its_known_workload_and_is_refused_otherwise(
    cp: &ControlPlane,
) {
    let ns = namespace(cp).await;
    let ns = ns.name();
    let pods = deployment(cp, ns, "web", 2).await;
    let app = resolving(cp, ns, &[]).await;
    let (status, _) = post(&app, webhook(vec![alert(ns, &pods[0])])).await;
    assert_eq!(status, 201);
    Api::<Pod>::namespaced(cp.admin_client(), ns)
        .delete(&pods[0], &Default::default())
        .await
        .expect("deleting the Pod");
    // This process resolved it before: owners do not change, so it still counts.
    let (status, body) = post(&app, webhook(vec![alert(ns, &pods[0])])).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        body["results"][0]["fingerprint"],
        fp(ns, "Deployment", "web").as_str()
    );
    // A process that never saw it cannot tell its workload: refused, nothing written.
    let cold = resolving(cp, ns, &[("POD_NAME", "cold")]).await;
    let (status, body) = post(&cold, webhook(vec![alert(ns, &pods[0])])).await;
    assert_eq!(status, 200, "{body}");
    let result = &body["results"][0];
    assert_eq!(result["status"], "rejected", "{body}");
    assert_eq!(
        result["rejection"]["reason"], "resource_not_found",
        "{body}"
    );
    assert!(
        result["rejection"]["message"]
            .as_str()
            .is_some_and(|m| m.contains(&pods[0])),
        "{body}"
    );
    let list = stored_rrs(cp, ns).await;
    assert_eq!(list.len(), 1, "never one RR per Pod: {list:?}");
    assert_eq!(
        (target(&list[0]).0.as_str(), count(&list[0])),
        ("Deployment", 2)
    );
    // Its sibling, alive, resolves in the cold process too.
    let (status, body) = post(&cold, webhook(vec![alert(ns, &pods[1])])).await;
    assert_eq!(status, 202, "{body}");
}

async fn each_hold_state_counts_or_opens_as_kubernauts_gateway(cp: &ControlPlane) {
    let ns = namespace(cp).await;
    let ns = ns.name();
    let app = resolving(cp, ns, &[]).await;
    let ahead = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(3);
    let cases: [(&str, Value, &str); 6] = [
        (
            "verifying",
            json!({"overallPhase": "Verifying"}),
            "duplicate",
        ),
        ("blocked", json!({"overallPhase": "Blocked"}), "duplicate"),
        (
            "manual-review",
            json!({"overallPhase": "Completed",
                   "completionStatus": {"outcome": "ManualReviewRequired", "requiresManualReview": true}}),
            "duplicate",
        ),
        (
            "backoff",
            json!({"overallPhase": "Failed",
                   "routingStatus": {"nextAllowedExecution": ahead.to_string(), "consecutiveFailureCount": 1}}),
            "duplicate",
        ),
        (
            "remediated",
            json!({"overallPhase": "Completed", "completionStatus": {"outcome": "Remediated"}}),
            "created",
        ),
        (
            "backoff-passed",
            json!({"overallPhase": "Completed",
                   "completionStatus": {"outcome": "NoActionRequired"},
                   "routingStatus": {"nextAllowedExecution": "2026-01-01T00:00:00Z"}}),
            "created",
        ),
    ];
    for (pod_name, status, expected) in &cases {
        pod(cp, ns, pod_name, Value::Null).await;
        let (code, _) = post(&app, webhook(vec![alert(ns, pod_name)])).await;
        assert_eq!(code, 201, "{pod_name}: first signal");
        let first = rr_name(&fp(ns, "Pod", pod_name), 1);
        ro_writes(cp, ns, &first, status.clone()).await;
        let (_, body) = post(&app, webhook(vec![alert(ns, pod_name)])).await;
        assert_eq!(
            body["results"][0]["status"], *expected,
            "{pod_name}: {body}"
        );
    }
    // The backoff passes on the API server's clock: the next signal opens generation 2.
    let left = ahead.duration_since(jiff::Timestamp::now()).unsigned_abs();
    let wait = left + std::time::Duration::from_secs(1);
    tokio::time::sleep(wait).await;
    let (_, body) = post(&app, webhook(vec![alert(ns, "backoff")])).await;
    assert_eq!(body["results"][0]["status"], "created", "{body}");
    let by_name: BTreeMap<String, i64> = stored_rrs(cp, ns)
        .await
        .iter()
        .map(|rr| {
            (
                rr["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                count(rr),
            )
        })
        .collect();
    for (pod_name, _, expected) in &cases {
        let fp = fp(ns, "Pod", pod_name);
        let second = by_name.get(&rr_name(&fp, 2));
        if *expected == "duplicate" && *pod_name != "backoff" {
            assert_eq!(
                by_name.get(&rr_name(&fp, 1)),
                Some(&2),
                "{pod_name}: {by_name:?}"
            );
            assert_eq!(second, None, "{pod_name}: no second RR while held");
        } else {
            assert_eq!(second, Some(&1), "{pod_name}: {by_name:?}");
        }
    }
    assert_eq!(
        by_name.get(&rr_name(&fp(ns, "Pod", "backoff"), 1)),
        Some(&2),
        "the signal in the backoff was counted on the held RR"
    );
}

async fn scope_managed_refuses_what_kubernaut_does_not_manage(cp: &ControlPlane) {
    let plain = namespace(cp).await;
    let managed = namespace(cp).await;
    Api::<Namespace>::all(cp.admin_client())
        .patch(
            managed.name(),
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"labels": {"kubernaut.ai/managed": "true"}}})),
        )
        .await
        .expect("labelling the namespace");
    let label = |value: &str| json!({"kubernaut.ai/managed": value});
    for (ns, name, labels) in [
        (plain.name(), "unlabelled", Value::Null),
        (plain.name(), "opted-in", label("true")),
        (managed.name(), "inherits", Value::Null),
        (managed.name(), "opted-out", label("false")),
    ] {
        let _: Pod = make(
            cp,
            ns,
            json!({"metadata": {"name": name, "labels": labels}, "spec": pod_spec()}),
        )
        .await;
    }
    let app = resolving(cp, plain.name(), &[("GATEWAY_SCOPE", "managed")]).await;
    let decided = [
        (plain.name(), "unlabelled", "rejected"),
        (plain.name(), "opted-in", "created"),
        (managed.name(), "inherits", "created"),
        (managed.name(), "opted-out", "rejected"),
    ];
    for (ns, name, expected) in decided {
        let (code, body) = post(&app, webhook(vec![alert(ns, name)])).await;
        let result = &body["results"][0];
        assert_eq!(result["status"], expected, "{ns}/{name}: {body}");
        if expected == "rejected" {
            assert_eq!(code, 200, "{body}");
            assert_eq!(result["rejection"]["reason"], "unmanaged_resource");
            assert_eq!(
                result["rejection"]["action"],
                format!(
                    "To manage this resource, add the label: kubectl label -n {ns} pod {name} kubernaut.ai/managed=true"
                ),
            );
        }
    }
    let names: Vec<(String, String)> = stored_rrs(cp, plain.name())
        .await
        .iter()
        .map(target)
        .collect();
    assert_eq!(names.len(), 2, "only managed targets get an RR: {names:?}");
    // A Node without the label is unmanaged (cluster-scoped: no namespace to inherit from).
    let node = json!({"status": "firing", "labels": {"alertname": "NodeDown", "node": "worker-1"},
                      "startsAt": "2026-11-27T08:14:27.613Z"});
    let (code, body) = post(&app, webhook(vec![node])).await;
    assert_eq!(
        (code, &body["results"][0]["status"]),
        (200, &json!("rejected")),
        "{body}"
    );
}

async fn owner_resolution_keeps_the_request_budget(cp: &ControlPlane) {
    let ns = namespace(cp).await;
    let ns = ns.name();
    let pods = deployment(cp, ns, "budget", 2).await;
    let app = resolving(cp, ns, &[]).await;
    let new = cost(cp, post(&app, webhook(vec![alert(ns, &pods[0])]))).await;
    assert_eq!(
        new,
        breakdown(&[
            ("GET pods", 1.0),
            ("GET replicasets", 1.0),
            ("GET leases", 1.0),
            ("LIST remediationrequests", 1.0),
            ("POST leases", 1.0),
            ("POST remediationrequests", 1.0),
            ("PATCH remediationrequests/status", 1.0),
        ]),
        "a cold process reads the owner chain once: the Pod and its ReplicaSet"
    );
    let dup = cost(cp, post(&app, webhook(vec![alert(ns, &pods[0])]))).await;
    assert_eq!(
        dup,
        breakdown(&[
            ("GET remediationrequests", 1.0),
            ("PATCH remediationrequests/status", 1.0),
        ]),
        "a duplicate in a warm process: read the RR, count"
    );
    let sibling = cost(cp, post(&app, webhook(vec![alert(ns, &pods[1])]))).await;
    assert_eq!(
        sibling,
        breakdown(&[
            ("GET pods", 1.0),
            ("GET remediationrequests", 1.0),
            ("PATCH remediationrequests/status", 1.0),
        ]),
        "a new Pod of a known ReplicaSet: one read of the Pod"
    );
}

/// kubernaut's orchestrator writes its whole status; counting a signal keeps every field.
#[tokio::test]
async fn the_orchestrators_status_survives_counting() {
    let (cp, ns) = setup().await;
    let ns = ns.name();
    let app = in_process(cp, ns, &[]).await;
    let body = crate::support::firing("ro-status");
    let (code, answer) = post(&app, body.clone()).await;
    assert_eq!(code, 201, "{answer}");
    let name = answer["results"][0]["remediationRequest"]
        .as_str()
        .and_then(|r| r.split('/').nth(1))
        .expect("the RR's name")
        .to_owned();
    let reference = json!({"apiVersion": "kubernaut.ai/v1alpha1", "kind": "AIAnalysis",
                           "name": "ai-1", "namespace": ns, "uid": "0b7e"});
    let status = json!({
        "overallPhase": "Verifying",
        "message": "verifying the fix",
        "observedGeneration": 1,
        "startTime": "2026-11-27T08:15:00Z",
        "conditions": [{"type": "Ready", "status": "False", "reason": "Verifying",
                        "message": "waiting", "lastTransitionTime": "2026-11-27T08:15:00Z"}],
        "phaseProgress": {"aiAnalysisRef": reference, "processingStartTime": "2026-11-27T08:15:00Z",
                          "verificationDeadline": "2026-11-27T09:15:00Z"},
        "routingStatus": {"consecutiveFailureCount": 2, "duplicateCount": 1,
                          "duplicateRefs": ["rr-x"], "blockReason": "ConsecutiveFailures",
                          "nextAllowedExecution": "2026-11-27T10:00:00Z"},
        "completionStatus": {"notificationStatus": "Sent", "requiresManualReview": false},
        "operatorAudit": {"lastModifiedBy": "alice", "preRemediationSpecHash": "abc"},
        "timeoutConfig": {"global": "1h0m0s"},
        "workflowSelection": {"confidence": "0.93", "targetDisplay": "Deployment/web",
                              "remediationTarget": {"kind": "Deployment", "name": "web"},
                              "selectedWorkflowRef": {"workflowId": "restart", "version": "1",
                                                      "executionBundle": "oci://x"}},
    });
    ro_writes(cp, ns, &name, status.clone()).await;
    let (code, answer) = post(&app, body).await;
    assert_eq!(code, 202, "{answer}");
    let stored = stored_rrs(cp, ns).await.remove(0);
    for (key, value) in status.as_object().expect("an object") {
        assert_eq!(&stored["status"][key], value, "status.{key} must be kept");
    }
    assert_eq!(count(&stored), 2);
}
