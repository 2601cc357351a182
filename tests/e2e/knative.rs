//! The Knative Service (`knative/service.yaml`): applied with strict field
//! validation against Knative Serving's own CRDs (pinned, from the Go module
//! cache by `hack/knative-crds.sh`), using no field that Knative puts behind a
//! feature flag, with the ServiceAccount and RBAC that the recipe's one Helm
//! command installs; and the image's entrypoint run the way Knative runs it
//! (`PORT` set, no `POD_NAME`, the ServiceAccount's token), from zero, serving
//! its first request within the Service's own request timeout.

use std::path::PathBuf;
use std::time::Instant;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, GroupVersionKind, Patch, PatchParams, ValidationDirective};
use kube::discovery::pinned_kind;
use serde::Deserialize;
use serde_json::Value;
use testenv::{ControlPlane, Identity};
use tokio::sync::OnceCell;

use crate::chart::{apply, kind, service_account_client};
use crate::image::{Proc, get_status, image};
use crate::support::{active_of, firing, http, plane, post_http, rrs};

/// manifest is knative/service.yaml as JSON.
fn manifest() -> Value {
    let text = std::fs::read_to_string(testenv::repo_root().join("knative/service.yaml"))
        .expect("reading knative/service.yaml");
    let yaml: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).expect("YAML");
    serde_json::to_value(yaml).expect("JSON")
}

fn crd_dir() -> PathBuf {
    let out = std::process::Command::new(testenv::repo_root().join("hack/knative-crds.sh"))
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("running hack/knative-crds.sh");
    assert!(out.status.success(), "hack/knative-crds.sh failed");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// knative_crds reads every CRD of Knative Serving's `300-resources`.
fn knative_crds() -> Vec<CustomResourceDefinition> {
    let mut crds = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(crd_dir())
        .expect("the CRD dir")
        .map(|e| e.expect("a dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("a CRD file");
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let v = serde_yaml_ng::Value::deserialize(doc).expect("YAML");
            if v.is_null() {
                continue;
            }
            crds.push(serde_yaml_ng::from_value(v).expect("a CRD"));
        }
    }
    crds
}

/// knative_plane is the shared control plane with Knative Serving's CRDs.
async fn knative_plane() -> &'static ControlPlane {
    static CRDS: OnceCell<()> = OnceCell::const_new();
    let cp = plane().await;
    CRDS.get_or_init(|| async {
        for crd in knative_crds() {
            cp.install_crd(crd)
                .await
                .expect("installing a Knative Serving CRD");
        }
    })
    .await;
    cp
}

/// flagged lists the paths of `value` whose schema node in `schema` says it
/// is behind a Knative feature flag, or that the schema does not know.
fn flagged(value: &Value, schema: &Value, path: &str, out: &mut Vec<String>) {
    if schema["description"]
        .as_str()
        .is_some_and(|d| d.contains("feature flag"))
    {
        out.push(format!("{path}: {}", schema["description"]));
        return;
    }
    if schema["x-kubernetes-preserve-unknown-fields"] == true && schema["properties"].is_null() {
        return;
    }
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let sub = if schema["properties"][k].is_object() {
                    &schema["properties"][k]
                } else if schema["additionalProperties"].is_object() {
                    &schema["additionalProperties"]
                } else {
                    out.push(format!("{path}.{k}: not in the schema"));
                    continue;
                };
                flagged(v, sub, &format!("{path}.{k}"), out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                flagged(v, &schema["items"], &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn the_service_uses_no_feature_flagged_field_and_the_chart_account() {
    let svc = manifest();
    assert_no_feature_flagged_or_unknown_field(&svc);
    assert_it_is_cluster_local_and_scales_from_zero(&svc);
    assert_its_timeout_outlasts_the_gateways_bounds(&svc);
    assert_the_container_is_restricted_and_the_charts_image(&svc);
    assert_the_recipe_installs_the_account_it_runs_as(&svc);
}

/// assert_no_feature_flagged_or_unknown_field checks the Service's spec against Knative's
/// Service CRD.
fn assert_no_feature_flagged_or_unknown_field(svc: &Value) {
    let crd = knative_crds()
        .into_iter()
        .find(|c| c.metadata.name.as_deref() == Some("services.serving.knative.dev"))
        .expect("Knative's Service CRD");
    let schema = serde_json::to_value(&crd.spec.versions[0].schema)
        .expect("schema as JSON")["openAPIV3Schema"]
        .clone();
    let mut found = Vec::new();
    flagged(
        &svc["spec"],
        &schema["properties"]["spec"],
        "spec",
        &mut found,
    );
    assert!(
        found.is_empty(),
        "feature-flagged or unknown fields: {found:#?}"
    );
}

/// assert_it_is_cluster_local_and_scales_from_zero checks the visibility and the
/// autoscaling annotations.
fn assert_it_is_cluster_local_and_scales_from_zero(svc: &Value) {
    assert_eq!(
        svc["metadata"]["labels"]["networking.knative.dev/visibility"],
        "cluster-local"
    );
    let template = &svc["spec"]["template"];
    let annotations = &template["metadata"]["annotations"];
    assert_eq!(annotations["autoscaling.knative.dev/min-scale"], "0");
    assert!(annotations["autoscaling.knative.dev/max-scale"].is_string());
    // Two of Alertmanager's default group_interval (5 m): an incident's updates find the
    // instance warm; one instance for a new revision (README, "Knative").
    assert_eq!(
        annotations["autoscaling.knative.dev/scale-down-delay"],
        "10m"
    );
    assert_eq!(annotations["autoscaling.knative.dev/initial-scale"], "1");
    let target: u64 = annotations["autoscaling.knative.dev/target"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .expect("a concurrency target");
    let concurrency = template["spec"]["containerConcurrency"]
        .as_u64()
        .expect("containerConcurrency");
    assert!(
        0 < target && target <= concurrency,
        "{target} {concurrency}"
    );
}

/// assert_its_timeout_outlasts_the_gateways_bounds checks the request timeout against the
/// gateway's own bounds (src/app.rs: a batch takes at most lock wait + 12 API timeouts; a
/// request at most GATEWAY_REQUEST_TIMEOUT_MS, 60 s by default), and the environment.
fn assert_its_timeout_outlasts_the_gateways_bounds(svc: &Value) {
    let template = &svc["spec"]["template"];
    let env = container_env(svc);
    let ms = |k: &str, default: u64| env.get(k).map_or(default, |v| v.parse().expect("a number"));
    let batch_ms = ms("GATEWAY_LOCK_WAIT_MS", 5000) + 12 * ms("GATEWAY_API_TIMEOUT_MS", 5000);
    let request_ms = ms("GATEWAY_REQUEST_TIMEOUT_MS", 60_000);
    let timeout_ms = template["spec"]["timeoutSeconds"]
        .as_u64()
        .expect("timeoutSeconds")
        * 1000;
    assert!(
        timeout_ms > batch_ms.max(request_ms),
        "{timeout_ms} vs {batch_ms}, {request_ms}"
    );
    assert!(env.contains_key("OTEL_EXPORTER_OTLP_ENDPOINT"), "{env:?}");
    assert!(!env.contains_key("POD_NAME"), "{env:?}");
}

/// assert_the_container_is_restricted_and_the_charts_image checks the container's requests,
/// security context and image.
fn assert_the_container_is_restricted_and_the_charts_image(svc: &Value) {
    let container = &svc["spec"]["template"]["spec"]["containers"][0];
    assert!(container["resources"]["requests"].is_object());
    let sc = &container["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(sc["capabilities"]["drop"][0], "ALL");
    let (repository, version) = crate::image::chart_image();
    assert_eq!(container["image"], format!("{repository}:{version}"));
}

/// assert_the_recipe_installs_the_account_it_runs_as checks that the recipe's Helm command
/// installs the account the Service runs as, its RBAC and the CRD, and nothing that would
/// serve on its own.
fn assert_the_recipe_installs_the_account_it_runs_as(svc: &Value) {
    let template = &svc["spec"]["template"];
    let ns = svc["metadata"]["namespace"].as_str().expect("a namespace");
    let text = std::fs::read_to_string(testenv::repo_root().join("knative/service.yaml"))
        .expect("knative/service.yaml");
    assert!(
        text.contains(&format!(
            "helm install signal-gateway chart/ -n {ns} --create-namespace --set deployment.enabled=false"
        )),
        "the recipe names the Helm command"
    );
    let objects = crate::chart::render_release("signal-gateway", ns, &["deployment.enabled=false"]);
    let sa = template["spec"]["serviceAccountName"]
        .as_str()
        .expect("an account");
    let names: Vec<_> = objects
        .iter()
        .map(|o| {
            (
                kind(o).to_owned(),
                o.metadata.name.clone().unwrap_or_default(),
            )
        })
        .collect();
    for want in [
        ("ServiceAccount", sa),
        ("Role", "signal-gateway"),
        ("RoleBinding", "signal-gateway"),
        (
            "CustomResourceDefinition",
            "remediationrequests.kubernaut.ai",
        ),
    ] {
        assert!(
            names.iter().any(|(k, n)| k == want.0 && n == want.1),
            "{want:?} in {names:?}"
        );
    }
    assert!(!names.iter().any(|(k, _)| k == "Deployment"), "{names:?}");
}

fn container_env(svc: &Value) -> std::collections::BTreeMap<String, String> {
    svc["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .expect("env")
        .iter()
        .map(|e| {
            let name = e["name"].as_str().expect("a name").to_owned();
            let value = e["value"]
                .as_str()
                .unwrap_or_else(|| panic!("{name} is not a plain value: {e}"));
            (name, value.to_owned())
        })
        .collect()
}

/// in_namespace is the manifest moved to `ns`.
fn in_namespace(ns: &str) -> Value {
    let mut svc = manifest();
    svc["metadata"]["namespace"] = ns.into();
    for e in svc["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array_mut()
        .expect("env")
    {
        if e["name"] == "GATEWAY_NAMESPACE" {
            e["value"] = ns.into();
        }
    }
    svc
}

#[tokio::test]
async fn the_service_applies_to_knative_serving_crds_with_strict_validation() {
    let cp = knative_plane().await;
    let ns = cp.new_namespace().await.expect("a test namespace");
    let admin = cp.admin_client();
    let svc: DynamicObject = serde_json::from_value(in_namespace(ns.name())).expect("an object");
    let gvk = GroupVersionKind::gvk("serving.knative.dev", "v1", "Service");
    let (resource, _) = pinned_kind(&admin, &gvk)
        .await
        .expect("Knative's Service kind");
    let api: Api<DynamicObject> = Api::namespaced_with(admin, ns.name(), &resource);
    let mut pp = PatchParams::apply("knative-test").force();
    pp.field_validation = Some(ValidationDirective::Strict);
    api.patch("signal-gateway", &pp.clone().dry_run(), &Patch::Apply(&svc))
        .await
        .unwrap_or_else(|e| panic!("server-side dry run of knative/service.yaml: {e}"));
    let stored = api
        .patch("signal-gateway", &pp, &Patch::Apply(&svc))
        .await
        .unwrap_or_else(|e| panic!("applying knative/service.yaml: {e}"));
    assert_eq!(
        stored.data["spec"]["template"]["spec"]["containerConcurrency"],
        svc.data["spec"]["template"]["spec"]["containerConcurrency"]
    );

    // The check is live: a field Knative does not know is refused.
    let mut bad = in_namespace(ns.name());
    bad["spec"]["template"]["spec"]["containers"][0]["notAField"] = true.into();
    let err = api
        .patch("signal-gateway", &pp.dry_run(), &Patch::Apply(&bad))
        .await
        .expect_err("an unknown field is refused under strict validation");
    assert!(err.to_string().contains("notAField"), "{err}");
}

#[tokio::test]
async fn from_zero_the_image_serves_its_first_request_as_knative_runs_it() {
    let img = image();
    let cp = knative_plane().await;
    let ns = cp.new_namespace().await.expect("a test namespace");
    // The recipe's first command, rendered and applied.
    let objects =
        crate::chart::render_release("signal-gateway", ns.name(), &["deployment.enabled=false"]);
    apply(&cp.admin_client(), &objects).await;
    let (sa, token) = service_account_client(cp, ns.name(), "signal-gateway").await;
    testenv::wait_allowed(
        &sa,
        ns.name(),
        "kubernaut.ai",
        "remediationrequests",
        "create",
    )
    .await
    .unwrap_or_else(|e| panic!("the ServiceAccount {e}"));
    let dir = tempfile::tempdir().expect("a temp dir");
    let kubeconfig = dir.path().join("kubeconfig");
    let nobody = std::fs::read_to_string(cp.kubeconfig_path(Identity::Nobody)).expect("kubeconfig");
    std::fs::write(
        &kubeconfig,
        nobody.replace(cp.token(Identity::Nobody), &token),
    )
    .expect("writing the ServiceAccount's kubeconfig");

    let svc = in_namespace(ns.name());
    let mut env = container_env(&svc);
    // Nothing listens for OTLP here; auth is covered by the gateway tests.
    env.retain(|k, _| !k.starts_with("OTEL_"));
    env.insert("GATEWAY_AUTH".into(), "none".into());
    // The alert is about a Pod that does not exist: with owner resolution it would be rejected.
    env.insert("GATEWAY_OWNER_RESOLUTION".into(), "false".into());
    env.insert("GATEWAY_LISTEN_ADDR".into(), "127.0.0.1:8080".into());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
        .to_string();
    env.insert("PORT".into(), port.clone());
    env.insert(
        "HOSTNAME".into(),
        "signal-gateway-00001-deployment-abcde".into(),
    );
    env.insert(
        "KUBECONFIG".into(),
        kubeconfig.to_str().expect("UTF-8").into(),
    );
    let vars: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();

    let timeout = std::time::Duration::from_secs(
        svc["spec"]["template"]["spec"]["timeoutSeconds"]
            .as_u64()
            .expect("timeoutSeconds"),
    );
    // As the activator does: start the instance, wait for its readiness
    // probe, forward the held request.
    let started = Instant::now();
    let proc = Proc::start(img, &vars);
    assert_eq!(proc.addr.port().to_string(), port, "PORT decides the port");
    assert_eq!(
        get_status(proc.addr, "/readyz").await,
        200,
        "{}",
        proc.log()
    );
    let (status, body) = post_http(&http(), proc.addr, firing("knative-pod"))
        .await
        .expect("an answer");
    let first = started.elapsed();
    assert_eq!(status, 201, "{body}\n{}", proc.log());
    assert!(
        first < timeout,
        "first request took {first:?}, the Service allows {timeout:?}"
    );
    eprintln!("knative cold start: first request answered {first:?} after spawn");
    assert_eq!(active_of(&rrs(cp, ns.name()).await).len(), 1);
}
