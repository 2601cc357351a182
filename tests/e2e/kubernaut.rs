//! kubernaut compatibility: RRs this gateway writes are valid under kubernaut's own
//! RemediationRequest CRD (`../shared/kubernaut/`, installed unchanged by
//! `owners::under_kubernauts_crd`, whose control plane runs this as a step), and a gateway
//! process runs the signal flow against it: a create, then a duplicate counted on the
//! status. Values at kubernaut's bounds make an RR; values beyond them are rejected per
//! alert before any write. The chart installs beside that CRD with `crds.install=false`,
//! and refuses to take it over otherwise.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, ListParams};
use serde_json::json;
use testenv::{ControlPlane, gateway::Gateway};

use crate::chart::{helm, run_helm};
use crate::support::{Http, alert, firing, http, post_http, spawn, webhook};

/// rrs_written_by_the_gateway_are_valid runs on a control plane with kubernaut's CRD.
pub async fn rrs_written_by_the_gateway_are_valid(cp: &ControlPlane) {
    let ns = cp.new_namespace().await.expect("a test namespace");
    install_the_chart_beside_kubernauts_crd(cp, ns.name()).await;
    let gw = spawn(cp, ns.name(), "kubernaut-0", &[]);
    let http = http();
    send_alerts_at_and_beyond_kubernauts_bounds(&http, &gw).await;
    send_a_signal_and_its_duplicate(&http, &gw).await;
    let rrs: Api<DynamicObject> =
        Api::namespaced_with(cp.admin_client(), ns.name(), &crate::owners::rr_resource());
    let rr = assert_the_rrs_are_as_kubernaut_fills_them(&rrs).await;
    // kubernaut's controllers move the phase; the gateway then opens a new RR.
    let patch = json!({"status": {"overallPhase": "Completed"}});
    rrs.patch_status(
        rr.metadata.name.as_deref().expect("a name"),
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&patch),
    )
    .await
    .expect("kubernaut completing the RR");
    let (status, body) = post_http(&http, gw.addr(), firing("kubernaut-pod"))
        .await
        .expect("an answer");
    assert_eq!(status, 201, "{body}\n{}", gw.logs().join("\n"));
}

/// install_the_chart_beside_kubernauts_crd checks that Helm refuses to take over kubernaut's
/// CRD, and that with `crds.install=false` the chart installs and leaves it untouched.
async fn install_the_chart_beside_kubernauts_crd(cp: &ControlPlane, ns: &str) {
    let crds: Api<CustomResourceDefinition> = Api::all(cp.admin_client());
    let before = crds
        .get("remediationrequests.kubernaut.ai")
        .await
        .expect("kubernaut's CRD");
    let kubeconfig = cp.kubeconfig_path(testenv::Identity::Admin);
    let kubeconfig = kubeconfig.to_str().expect("UTF-8");
    let install = [
        "install",
        "sg",
        "chart/",
        "--namespace",
        ns,
        "--kubeconfig",
        kubeconfig,
    ];
    let (ok, stdout, stderr) = run_helm(&install);
    assert!(
        !ok && stderr.contains("remediationrequests.kubernaut.ai")
            && stderr.contains("cannot be imported"),
        "Helm must refuse to take over kubernaut's CRD:\n{stdout}\n{stderr}"
    );
    helm(&[&install[..], &["--set", "crds.install=false"]].concat());
    let after = crds
        .get("remediationrequests.kubernaut.ai")
        .await
        .expect("kubernaut's CRD");
    assert_eq!(
        after.metadata.resource_version, before.metadata.resource_version,
        "crds.install=false leaves kubernaut's CRD untouched"
    );
}

/// send_alerts_at_and_beyond_kubernauts_bounds sends an alert at kubernaut's bounds
/// (counted in characters) beside alerts beyond them: the first makes an RR, the others are
/// rejected per alert.
async fn send_alerts_at_and_beyond_kubernauts_bounds(http: &Http, gw: &Gateway) {
    let labelled = |pod: &str, name: String, severity: String| {
        let mut a = alert(pod, "firing");
        a["labels"]["alertname"] = name.into();
        a["labels"]["severity"] = severity.into();
        a
    };
    let (status, body) = post_http(
        http,
        gw.addr(),
        webhook(vec![
            labelled("edge-pod", "N".repeat(253), "é".repeat(50)),
            labelled("long-severity-pod", "X".into(), "s".repeat(51)),
            labelled("long-name-pod", "N".repeat(254), "critical".into()),
        ]),
    )
    .await
    .expect("an answer");
    assert_eq!(status, 201, "{body}\n{}", gw.logs().join("\n"));
    let statuses: Vec<_> = body["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["status"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(statuses, ["created", "rejected", "rejected"], "{body}");
    assert!(
        body["results"][1]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("label `severity` is 51 characters")),
        "{body}"
    );
}

/// send_a_signal_and_its_duplicate sends one signal twice: created, then counted on the
/// status.
async fn send_a_signal_and_its_duplicate(http: &Http, gw: &Gateway) {
    let (status, body) = post_http(http, gw.addr(), firing("kubernaut-pod"))
        .await
        .expect("an answer");
    assert_eq!(status, 201, "{body}\n{}", gw.logs().join("\n"));
    let (status, body) = post_http(http, gw.addr(), firing("kubernaut-pod"))
        .await
        .expect("an answer");
    assert_eq!(status, 202, "{body}\n{}", gw.logs().join("\n"));
    assert_eq!(body["results"][0]["occurrenceCount"], 2, "{body}");
}

/// assert_the_rrs_are_as_kubernaut_fills_them checks the two RRs: the one at kubernaut's
/// bounds, and the one of kubernaut-pod with the fields kubernaut's own Gateway fills, as it
/// fills them; it returns the latter.
async fn assert_the_rrs_are_as_kubernaut_fills_them(rrs: &Api<DynamicObject>) -> DynamicObject {
    let list = rrs.list(&ListParams::default()).await.expect("listing RRs");
    assert_eq!(list.items.len(), 2, "{list:?}");
    let edge = list
        .items
        .iter()
        .find(|rr| rr.data["spec"]["targetResource"]["name"] == "edge-pod")
        .expect("the RR at kubernaut's bounds");
    assert_eq!(edge.data["spec"]["severity"], "é".repeat(50));
    let rr = list
        .items
        .into_iter()
        .find(|rr| rr.data["spec"]["targetResource"]["name"] == "kubernaut-pod")
        .expect("the RR of kubernaut-pod");
    assert_eq!(rr.data["spec"]["targetType"], "kubernetes", "{rr:?}");
    assert_eq!(rr.data["spec"]["targetResource"]["name"], "kubernaut-pod");
    // The fields kubernaut's own Gateway fills, as it fills them.
    assert_eq!(rr.data["spec"]["signalType"], "alert", "{rr:?}");
    assert_eq!(rr.data["spec"]["signalSource"], "prometheus", "{rr:?}");
    let provider: serde_json::Value =
        serde_json::from_str(rr.data["spec"]["providerData"].as_str().unwrap_or_default())
            .expect("providerData is JSON");
    assert_eq!(
        provider,
        json!({"labels": alert("kubernaut-pod", "firing")["labels"], "namespace": "prod"})
    );
    assert_eq!(
        rr.data["spec"]["originalPayload"].as_str(),
        Some(firing("kubernaut-pod").as_str()),
        "the webhook as sent"
    );
    assert_eq!(rr.data["status"]["deduplication"]["occurrenceCount"], 2);
    rr
}
