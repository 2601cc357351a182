//! Helpers shared by the end-to-end tests: the control plane and namespace of a
//! test, gateway processes, an HTTP client, payloads and cluster reads.

use std::{collections::BTreeMap, net::SocketAddr, path::Path};

use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use kube::{Api, CustomResourceExt, api::ListParams};
use serde_json::{Value, json};
use signal_gateway::{config::CHAOS_VARS, crd::RemediationRequest};
use testenv::{
    ControlPlane, TestNamespace,
    gateway::{Gateway, IN_PROCESS_TIMINGS, PROCESS_TIMINGS},
};
use tokio::sync::OnceCell;

pub type Http = Client<HttpConnector, Full<axum::body::Bytes>>;

/// PROMETHEUS is the Alertmanager webhook endpoint.
pub const PROMETHEUS: &str = "/api/v1/signals/prometheus";
/// EVENTS is the Kubernetes Event endpoint.
pub const EVENTS: &str = "/api/v1/signals/kubernetes-event";

/// setup returns the shared control plane, with the CRD installed, and a fresh
/// namespace in which the gateway identity holds the chart's Role.
pub async fn setup() -> (&'static ControlPlane, TestNamespace) {
    let cp = plane().await;
    let ns = cp.new_namespace().await.expect("creating a test namespace");
    (cp, ns)
}

/// plane is the shared control plane with the CRD installed.
pub async fn plane() -> &'static ControlPlane {
    static CRD: OnceCell<()> = OnceCell::const_new();
    let cp = testenv::shared();
    CRD.get_or_try_init(|| cp.install_crd(RemediationRequest::crd()))
        .await
        .expect("installing the RemediationRequest CRD");
    cp
}

/// private_plane starts a control plane of its own, with the CRD installed,
/// for a test that stops, restarts or hangs its parts.
pub async fn private_plane() -> ControlPlane {
    let cp = ControlPlane::start()
        .await
        .expect("starting a private control plane");
    cp.install_crd(RemediationRequest::crd())
        .await
        .expect("installing the RemediationRequest CRD");
    cp
}

/// spawn starts a gateway process built from this package in `ns`, with the
/// tests' lock timings, then `env` on top.
pub fn spawn(cp: &ControlPlane, ns: &str, name: &str, env: &[(&str, &str)]) -> Gateway {
    let chaos = env.iter().any(|(k, _)| CHAOS_VARS.contains(k));
    assert!(
        !chaos || cfg!(feature = "chaos"),
        "this test needs the chaos switches: run it with `--features chaos` (hack/test.sh does)"
    );
    let mut all = PROCESS_TIMINGS.to_vec();
    all.extend_from_slice(env);
    let bin = Path::new(env!("CARGO_BIN_EXE_signal-gateway"));
    Gateway::spawn(bin, cp, ns, name, &all).unwrap_or_else(|e| panic!("{e}"))
}

pub fn http() -> Http {
    Client::builder(TokioExecutor::new()).build_http()
}

/// alert is one Alertmanager alert about pod `pod` in namespace `prod`.
pub fn alert(pod: &str, status: &str) -> Value {
    json!({
        "status": status,
        "labels": {"alertname": "KubePodCrashLooping", "namespace": "prod", "pod": pod, "severity": "critical"},
        "annotations": {"summary": "Pod is crash looping."},
        "startsAt": "2026-11-27T08:14:27.613Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus:9090/graph",
        "fingerprint": "a3f9c2d18e4b7056"
    })
}

/// webhook is an Alertmanager webhook (version 4) carrying `alerts`.
pub fn webhook(alerts: Vec<Value>) -> String {
    json!({
        "version": "4",
        "groupKey": "{}:{alertname=\"KubePodCrashLooping\"}",
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "signal-gateway",
        "groupLabels": {"alertname": "KubePodCrashLooping"},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": alerts
    })
    .to_string()
}

/// firing is a webhook with one firing alert about `pod`.
pub fn firing(pod: &str) -> String {
    webhook(vec![alert(pod, "firing")])
}

/// post_http sends one webhook to a gateway process over HTTP; None means the
/// connection failed (the process was killed).
pub async fn post_http(http: &Http, to: SocketAddr, body: String) -> Option<(u16, Value)> {
    post_http_as(http, to, body, None).await
}

/// post_http_as is [`post_http`] with the bearer token `token`, if given.
pub async fn post_http_as(
    http: &Http,
    to: SocketAddr,
    body: String,
    token: Option<&str>,
) -> Option<(u16, Value)> {
    let mut req = axum::http::Request::post(format!("http://{to}{PROMETHEUS}"))
        .header("content-type", "application/json");
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    let req = req.body(Full::new(body.into())).expect("a request");
    let res = http.request(req).await.ok()?;
    let status = res.status().as_u16();
    let bytes = res.into_body().collect().await.ok()?.to_bytes();
    Some((
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    ))
}

/// rrs lists the RRs in `ns`, as the admin.
pub async fn rrs(cp: &ControlPlane, ns: &str) -> Vec<RemediationRequest> {
    Api::<RemediationRequest>::namespaced(cp.admin_client(), ns)
        .list(&ListParams::default())
        .await
        .expect("listing RRs")
        .items
}

/// active_of keeps the RRs of `list` that still stand for their problem.
pub fn active_of(list: &[RemediationRequest]) -> Vec<&RemediationRequest> {
    list.iter().filter(|rr| rr.is_active()).collect()
}

/// active_per_target groups the active RRs by the name of their target.
pub fn active_per_target(
    list: &[RemediationRequest],
) -> BTreeMap<String, Vec<&RemediationRequest>> {
    let mut m = BTreeMap::<String, Vec<&RemediationRequest>>::new();
    for rr in active_of(list) {
        m.entry(rr.spec.target_resource.name.clone())
            .or_default()
            .push(rr);
    }
    m
}

/// in_process assembles a gateway in this process, in `ns`: no auth, the in-process lock
/// and API budgets, and `extra` overriding any variable.
pub async fn in_process(cp: &ControlPlane, ns: &str, extra: &[(&str, &str)]) -> axum::Router {
    let mut vars: BTreeMap<&str, &str> = [
        ("GATEWAY_NAMESPACE", ns),
        ("GATEWAY_AUTH", "none"),
        ("POD_NAME", "in-process"),
        // Most tests alert about Pods that do not exist; the owner tests turn it on.
        ("GATEWAY_OWNER_RESOLUTION", "false"),
    ]
    .into();
    vars.extend(IN_PROCESS_TIMINGS);
    vars.extend(extra.iter().copied());
    let config =
        signal_gateway::config::Config::from_vars(vars).expect("a valid test configuration");
    signal_gateway::app::assemble(&config, cp.gateway_client())
        .await
        .router()
}

/// post hands one webhook to an in-process router and returns its status and JSON body.
pub async fn post(app: &axum::Router, body: impl Into<String>) -> (u16, Value) {
    let (status, _, value) = post_to(app, PROMETHEUS, "application/json", body.into()).await;
    (status.as_u16(), value)
}

/// post_to hands one POST to an in-process router and returns its status, headers and JSON
/// body (Null when the body is not JSON).
pub async fn post_to(
    app: &axum::Router,
    path: &str,
    content_type: &str,
    body: String,
) -> (axum::http::StatusCode, axum::http::HeaderMap, Value) {
    let req = axum::http::Request::post(path)
        .header("content-type", content_type)
        .body(axum::body::Body::from(body))
        .expect("a valid request");
    oneshot(app, req).await
}

/// oneshot hands `req` to an in-process router and returns its status, headers and JSON body
/// (Null when the body is not JSON).
pub async fn oneshot(
    app: &axum::Router,
    req: axum::http::Request<axum::body::Body>,
) -> (axum::http::StatusCode, axum::http::HeaderMap, Value) {
    use tower::ServiceExt as _;
    let res = app
        .clone()
        .oneshot(req)
        .await
        .expect("the router is infallible");
    let (status, headers) = (res.status(), res.headers().clone());
    let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .expect("a body");
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, headers, value)
}

pub use testenv::script;

/// fp_of is the fingerprint of pod `pod` in namespace `prod`, the target of `firing`.
pub fn fp_of(pod: &str) -> String {
    use signal_gateway::signal::{Fingerprint, TargetResource};
    Fingerprint::of(
        None,
        &TargetResource {
            kind: "Pod".into(),
            name: pod.into(),
            namespace: "prod".into(),
            api_version: "v1".into(),
        },
    )
    .to_string()
}
