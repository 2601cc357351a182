//! Behaviour of the real API server that the gateway's correctness rests on:
//! optimistic concurrency, create-if-absent, RBAC as the chart grants it, and
//! the RemediationRequest CRD's validation and selectable field.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::core::Status;
use serde_json::json;
use signal_gateway::crd::{
    RemediationRequest, RemediationRequestSpec, SignalType, TargetResource, TargetType,
};
use testenv::ControlPlane;

use crate::support::setup;

/// api_error is the Status of a request that must fail with an API error.
fn api_error<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> Box<Status> {
    match result {
        Err(kube::Error::Api(status)) => status,
        Err(other) => panic!("expected an API error, got {other}"),
        Ok(value) => panic!("expected an API error, got success: {value:?}"),
    }
}

fn lease(name: &str, holder: &str) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(holder.to_owned()),
            lease_duration_seconds: Some(30),
            ..LeaseSpec::default()
        }),
    }
}

fn rr(name: &str, fingerprint: &str) -> RemediationRequest {
    let now = Time(jiff::Timestamp::now());
    RemediationRequest::new(
        name,
        RemediationRequestSpec {
            signal_fingerprint: fingerprint.to_owned(),
            target_type: TargetType::Kubernetes,
            signal_name: "KubePodCrashLooping".into(),
            severity: "critical".into(),
            signal_type: SignalType::Alert,
            signal_source: "alertmanager".into(),
            target_resource: TargetResource {
                kind: "Pod".into(),
                name: "web-0".into(),
                namespace: "prod".into(),
                api_version: "v1".into(),
            },
            firing_time: now.clone(),
            received_time: now,
            signal_labels: BTreeMap::from([("alertname".into(), "KubePodCrashLooping".into())]),
            signal_annotations: BTreeMap::new(),
            cluster_id: None,
            provider_data: None,
            original_payload: None,
        },
    )
}

/// claim is the merge patch the gateway sends to take a Lease it read at
/// `resource_version`: the version makes it a compare-and-swap.
fn claim(resource_version: Option<&str>, holder: &str) -> Patch<serde_json::Value> {
    Patch::Merge(json!({
        "metadata": {"resourceVersion": resource_version},
        "spec": {"holderIdentity": holder},
    }))
}

#[tokio::test]
async fn stale_resource_version_loses_with_conflict() {
    let (cp, ns) = setup().await;
    Api::<Lease>::namespaced(cp.admin_client(), ns.name())
        .create(&PostParams::default(), &lease("l", "nobody-yet"))
        .await
        .expect("creating the lease");

    let a = Api::<Lease>::namespaced(cp.gateway_client(), ns.name());
    let b = Api::<Lease>::namespaced(cp.gateway_client(), ns.name());
    let seen_by_a = a.get("l").await.expect("a reads the lease");
    let seen_by_b = b.get("l").await.expect("b reads the lease");
    let version = seen_by_a.metadata.resource_version.clone();
    assert!(version.is_some());
    assert_eq!(version, seen_by_b.metadata.resource_version);

    let pp = PatchParams::default();
    let (claim_a, claim_b) = (
        claim(version.as_deref(), "a"),
        claim(version.as_deref(), "b"),
    );
    let (ra, rb) = tokio::join!(a.patch("l", &pp, &claim_a), b.patch("l", &pp, &claim_b));
    let (winner, loser) = match (ra, rb) {
        (Ok(w), l @ Err(_)) | (l @ Err(_), Ok(w)) => (w, l),
        (ra, rb) => panic!("exactly one patch must win: a={ra:?} b={rb:?}"),
    };
    let status = api_error(loser);
    assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));
    let stored = a.get("l").await.expect("reading the lease back");
    assert_eq!(
        stored.spec.and_then(|s| s.holder_identity),
        winner.spec.and_then(|s| s.holder_identity)
    );
    // The stale version loses even when nobody else writes in between.
    let status = api_error(a.patch("l", &pp, &claim_a).await);
    assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));
}

#[tokio::test]
async fn creating_an_existing_name_is_already_exists() {
    let (cp, ns) = setup().await;
    let pp = PostParams::default();
    let leases = Api::<Lease>::namespaced(cp.gateway_client(), ns.name());
    leases
        .create(&pp, &lease("l", "first"))
        .await
        .expect("first create");
    let status = api_error(leases.create(&pp, &lease("l", "second")).await);
    assert_eq!(
        (status.code, status.reason.as_str()),
        (409, "AlreadyExists")
    );

    let rrs = Api::<RemediationRequest>::namespaced(cp.gateway_client(), ns.name());
    let fp = "a".repeat(64);
    rrs.create(&pp, &rr("r", &fp))
        .await
        .expect("first RR create");
    let status = api_error(rrs.create(&pp, &rr("r", &fp)).await);
    assert_eq!(
        (status.code, status.reason.as_str()),
        (409, "AlreadyExists")
    );
}

#[tokio::test]
async fn rbac_matches_the_chart() {
    let (cp, ns) = setup().await;
    let pp = PostParams::default();
    let lp = ListParams::default();

    let nobody = cp.nobody_client();
    let status = api_error(
        Api::<RemediationRequest>::namespaced(nobody.clone(), ns.name())
            .list(&lp)
            .await,
    );
    assert_eq!(status.code, 403, "{status:?}");
    let status = api_error(Api::<Lease>::namespaced(nobody, ns.name()).list(&lp).await);
    assert_eq!(status.code, 403, "{status:?}");

    let gateway = cp.gateway_client();
    Api::<RemediationRequest>::namespaced(gateway.clone(), ns.name())
        .create(&pp, &rr("r", &"b".repeat(64)))
        .await
        .expect("the gateway creates an RR in its namespace");
    Api::<Lease>::namespaced(gateway.clone(), ns.name())
        .create(&pp, &lease("l", "gateway"))
        .await
        .expect("the gateway creates a Lease in its namespace");

    // Leases are claimed by patch; the chart grants no update.
    let leases = Api::<Lease>::namespaced(gateway.clone(), ns.name());
    let current = leases.get("l").await.expect("the gateway reads its Lease");
    let status = api_error(leases.replace("l", &pp, &current).await);
    assert_eq!(status.code, 403, "{status:?}");

    let status = api_error(
        Api::<Lease>::namespaced(gateway.clone(), "default")
            .create(&pp, &lease("l", "gateway"))
            .await,
    );
    assert_eq!(status.code, 403, "{status:?}");
    let status = api_error(
        Api::<RemediationRequest>::namespaced(gateway, "default")
            .create(&pp, &rr("r", &"b".repeat(64)))
            .await,
    );
    assert_eq!(status.code, 403, "{status:?}");
}

#[tokio::test]
async fn malformed_fingerprint_is_invalid() {
    let (cp, ns) = setup().await;
    let rrs = Api::<RemediationRequest>::namespaced(cp.gateway_client(), ns.name());
    for (name, fp) in [
        ("short", "a".repeat(63)),
        ("long", "a".repeat(65)),
        ("upper", "A".repeat(64)),
        ("not-hex", "g".repeat(64)),
    ] {
        let status = api_error(rrs.create(&PostParams::default(), &rr(name, &fp)).await);
        assert_eq!(
            (status.code, status.reason.as_str()),
            (422, "Invalid"),
            "{name}: {status:?}"
        );
        assert!(
            status.message.contains("signalFingerprint"),
            "{name}: {}",
            status.message
        );
    }
}

#[tokio::test]
async fn spec_is_immutable() {
    let (cp, ns) = setup().await;
    let pp = PostParams::default();
    let rrs = Api::<RemediationRequest>::namespaced(cp.gateway_client(), ns.name());
    let mut created = rrs
        .create(&pp, &rr("r", &"c".repeat(64)))
        .await
        .expect("creating the RR");
    created.spec.signal_name = "SomethingElse".into();
    // The gateway may not update RRs at all; the admin shows that validation,
    // not RBAC, is what stops the change.
    let admin = Api::<RemediationRequest>::namespaced(cp.admin_client(), ns.name());
    let status = api_error(admin.replace("r", &pp, &created).await);
    assert_eq!(
        (status.code, status.reason.as_str()),
        (422, "Invalid"),
        "{status:?}"
    );
    assert!(status.message.contains("immutable"), "{}", status.message);
}

#[tokio::test]
async fn field_selector_on_fingerprint() {
    let (cp, ns) = setup().await;
    let pp = PostParams::default();
    let rrs = Api::<RemediationRequest>::namespaced(cp.gateway_client(), ns.name());
    let (fp1, fp2) = ("d".repeat(64), "e".repeat(64));
    rrs.create(&pp, &rr("one", &fp1))
        .await
        .expect("creating one");
    rrs.create(&pp, &rr("two", &fp2))
        .await
        .expect("creating two");

    let found = rrs
        .list(&ListParams::default().fields(&format!("spec.signalFingerprint={fp2}")))
        .await
        .expect("listing by fingerprint");
    let names: Vec<_> = found
        .items
        .iter()
        .filter_map(|r| r.metadata.name.as_deref())
        .collect();
    assert_eq!(names, ["two"]);
}

#[tokio::test]
async fn checked_in_crd_installs() {
    // A private control plane, so that the YAML is installed from scratch and
    // not applied over the CRD the other tests install.
    let cp = ControlPlane::start()
        .await
        .expect("starting a control plane");
    let path = testenv::repo_root().join("chart/crds/remediationrequests.yaml");
    let crd = testenv::read_crd(&path).expect("reading the checked-in CRD");
    cp.install_crd(crd)
        .await
        .expect("installing the checked-in CRD");

    let ns = cp.new_namespace().await.expect("creating a namespace");
    let rrs = Api::<RemediationRequest>::namespaced(cp.gateway_client(), ns.name());
    rrs.create(&PostParams::default(), &rr("r", &"f".repeat(64)))
        .await
        .expect("creating an RR under the checked-in CRD");
}

#[tokio::test]
async fn restarts_keep_data_and_credentials() {
    let cp = ControlPlane::start()
        .await
        .expect("starting a control plane");
    let ns = cp.new_namespace().await.expect("creating a namespace");
    let pp = PostParams::default();
    let leases = Api::<Lease>::namespaced(cp.gateway_client(), ns.name());
    leases
        .create(&pp, &lease("l", "before"))
        .await
        .expect("creating the lease");

    cp.stop_apiserver();
    let down = tokio::time::timeout(Duration::from_secs(10), leases.get("l")).await;
    assert!(
        !matches!(down, Ok(Ok(_))),
        "a stopped API server must not answer"
    );
    cp.start_apiserver()
        .await
        .expect("restarting kube-apiserver");
    leases
        .get("l")
        .await
        .expect("the old client works after the restart");

    // The kubeconfig written at start-up still works.
    let kubeconfig =
        kube::config::Kubeconfig::read_from(cp.kubeconfig_path(testenv::Identity::Gateway))
            .expect("reading the gateway kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("loading the gateway kubeconfig");
    let from_file = Api::<Lease>::namespaced(
        kube::Client::try_from(config).expect("client from kubeconfig"),
        ns.name(),
    );
    from_file
        .get("l")
        .await
        .expect("a client from the kubeconfig works after the restart");

    cp.stop_etcd();
    // Without etcd the API server holds the request; a short wait shows it.
    let down = tokio::time::timeout(Duration::from_secs(2), leases.get("l")).await;
    assert!(
        !matches!(down, Ok(Ok(_))),
        "without etcd the lease cannot be read"
    );
    cp.start_etcd().await.expect("restarting etcd");
    let after = leases
        .get("l")
        .await
        .expect("reading after the etcd restart");
    assert_eq!(
        after.spec.and_then(|s| s.holder_identity).as_deref(),
        Some("before")
    );
}
