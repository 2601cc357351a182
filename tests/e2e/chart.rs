//! The Helm chart: `helm lint`, `helm template`, every rendered object applied
//! to a real API server, and the chart's RBAC proven for the chart's own
//! ServiceAccount with a token from the TokenRequest API.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authentication::v1::{
    TokenRequest, TokenRequestSpec, TokenReview, TokenReviewSpec,
};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::PolicyRule;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{
    Api, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::discovery::{Scope, pinned_kind};
use serde::Deserialize;
use serde_json::Value;
use testenv::kubelet::pod_from_template;
use testenv::{ControlPlane, Identity};

/// RELEASE is the Helm release name; the chart names its objects after it.
const RELEASE: &str = "sg";
/// KUBE_VERSION is the version of the tests' kube-apiserver (hack/kube-binaries.sh).
const KUBE_VERSION: &str = "v1.37.2";
/// FIELD_MANAGER owns what these tests apply.
const FIELD_MANAGER: &str = "chart-test";

fn helm_path() -> &'static Path {
    static HELM: OnceLock<PathBuf> = OnceLock::new();
    HELM.get_or_init(|| testenv::tool("helm"))
}

/// run_helm runs helm with `args` from the repository root, with its own
/// empty configuration and no cluster; it returns success, stdout and stderr.
pub(crate) fn run_helm(args: &[&str]) -> (bool, String, String) {
    let home = tempfile::tempdir().expect("a temporary HELM home");
    let mut args = args.to_vec();
    if args.first() == Some(&"template") {
        // Without a cluster, render for the API server the tests run.
        args.extend(["--kube-version", KUBE_VERSION]);
    }
    let out = Command::new(helm_path())
        .args(&args)
        .current_dir(testenv::repo_root())
        .env("HELM_CACHE_HOME", home.path().join("cache"))
        .env("HELM_CONFIG_HOME", home.path().join("config"))
        .env("HELM_DATA_HOME", home.path().join("data"))
        .env("KUBECONFIG", home.path().join("no-kubeconfig"))
        .output()
        .expect("running helm");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// helm runs helm (see [`run_helm`]) and returns stdout and stderr; it fails
/// the test when helm fails.
pub(crate) fn helm(args: &[&str]) -> (String, String) {
    let (ok, stdout, stderr) = run_helm(args);
    assert!(ok, "helm {args:?} failed:\n{stdout}\n{stderr}");
    (stdout, stderr)
}

/// render runs `helm template` for release [`RELEASE`] in `ns` with `sets`
/// (`key=value`) and returns every rendered object.
pub(crate) fn render(ns: &str, sets: &[&str]) -> Vec<DynamicObject> {
    render_release(RELEASE, ns, sets)
}

/// render_release is [`render`] for release `release`.
pub(crate) fn render_release(release: &str, ns: &str, sets: &[&str]) -> Vec<DynamicObject> {
    render_files(release, ns, &[], sets)
}

/// render_files is [`render_release`] with the values files `files` (paths from the
/// repository root) before `sets`.
fn render_files(release: &str, ns: &str, files: &[&str], sets: &[&str]) -> Vec<DynamicObject> {
    let mut args = vec!["template", release, "chart/", "--namespace", ns];
    for f in files {
        args.extend(["--values", f]);
    }
    for s in sets {
        args.extend(["--set", s]);
    }
    let (yaml, _) = helm(&args);
    let mut objects = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(&yaml) {
        let value = serde_yaml_ng::Value::deserialize(doc)
            .unwrap_or_else(|e| panic!("helm rendered invalid YAML: {e}\n{yaml}"));
        if value.is_null() {
            continue;
        }
        let json: Value = serde_json::to_value(&value).expect("YAML as JSON");
        let obj: DynamicObject = serde_json::from_value(json)
            .unwrap_or_else(|e| panic!("not a Kubernetes object: {e}\n{value:?}"));
        assert!(
            obj.types.is_some(),
            "object without apiVersion/kind: {obj:?}"
        );
        assert!(
            obj.metadata.name.is_some(),
            "object without a name: {obj:?}"
        );
        objects.push(obj);
    }
    objects
}

pub(crate) fn kind(obj: &DynamicObject) -> &str {
    obj.types.as_ref().map_or("", |t| t.kind.as_str())
}

/// find returns the only object of `kind` named `name` in `namespace` (None
/// for cluster-scoped objects).
fn find<'a>(
    objects: &'a [DynamicObject],
    kind_: &str,
    namespace: Option<&str>,
    name: &str,
) -> &'a DynamicObject {
    let found: Vec<_> = objects
        .iter()
        .filter(|o| {
            kind(o) == kind_
                && o.metadata.namespace.as_deref() == namespace
                && o.metadata.name.as_deref() == Some(name)
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one {kind_} {namespace:?}/{name}, rendered: {:?}",
        summary(objects)
    );
    found[0]
}

/// summary lists the objects as `Kind namespace/name`.
fn summary(objects: &[DynamicObject]) -> Vec<String> {
    objects
        .iter()
        .map(|o| {
            format!(
                "{} {}/{}",
                kind(o),
                o.metadata.namespace.as_deref().unwrap_or(""),
                o.metadata.name.as_deref().unwrap_or("")
            )
        })
        .collect()
}

/// gateway_env is the gateway container's environment: a plain value,
/// `fieldRef:<fieldPath>` or `secretKeyRef:<name>/<key>`.
fn gateway_env(deployment: &Value) -> BTreeMap<String, String> {
    let containers = deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("the Deployment has containers");
    let gateway = containers
        .iter()
        .find(|c| c["name"] == "gateway")
        .expect("a container named gateway");
    gateway["env"]
        .as_array()
        .expect("the gateway container has env")
        .iter()
        .map(|e| {
            let name = e["name"].as_str().expect("env name").to_owned();
            let from = &e["valueFrom"];
            let value = match (&e["value"], &from["fieldRef"], &from["secretKeyRef"]) {
                (Value::String(v), Value::Null, Value::Null) if from.is_null() => v.clone(),
                (Value::Null, Value::Object(r), Value::Null) => {
                    format!("fieldRef:{}", r["fieldPath"].as_str().unwrap_or(""))
                }
                (Value::Null, Value::Null, Value::Object(r)) => format!(
                    "secretKeyRef:{}/{}",
                    r["name"].as_str().unwrap_or(""),
                    r["key"].as_str().unwrap_or("")
                ),
                _ => panic!("env {name} is not a string, fieldRef or secretKeyRef: {e}"),
            };
            (name, value)
        })
        .collect()
}

fn rendered_env(objects: &[DynamicObject], ns: &str) -> BTreeMap<String, String> {
    let deployment = find(objects, "Deployment", Some(ns), RELEASE);
    gateway_env(&serde_json::to_value(deployment).expect("Deployment as JSON"))
}

fn rules_of(obj: &DynamicObject) -> Vec<PolicyRule> {
    serde_json::from_value(obj.data["rules"].clone()).expect("rules are PolicyRules")
}

fn rules_file(relative: &str) -> Vec<PolicyRule> {
    let path = testenv::repo_root().join(relative);
    let text = std::fs::read_to_string(&path).expect("reading a rules file");
    serde_yaml_ng::from_str(&text).expect("parsing a rules file")
}

/// check_common checks what every rendering must hold: the CRD, the
/// ServiceAccount the Deployment runs as, the Role and RoleBinding in the
/// release namespace with exactly the rules of `chart/files/role-rules.yaml`,
/// and the ClusterRole with those of `chart/files/clusterrole-rules.yaml`.
fn check_common(objects: &[DynamicObject], ns: &str) {
    find(
        objects,
        "CustomResourceDefinition",
        None,
        "remediationrequests.kubernaut.ai",
    );
    find(objects, "ServiceAccount", Some(ns), RELEASE);
    find(objects, "Service", Some(ns), RELEASE);
    let deployment = serde_json::to_value(find(objects, "Deployment", Some(ns), RELEASE))
        .expect("Deployment as JSON");
    assert_eq!(
        deployment["spec"]["template"]["spec"]["serviceAccountName"], RELEASE,
        "the Deployment runs as the chart's ServiceAccount"
    );
    let role_rules = rules_file("chart/files/role-rules.yaml");
    assert_eq!(
        rules_of(find(objects, "Role", Some(ns), RELEASE)),
        role_rules
    );
    check_binding(
        find(objects, "RoleBinding", Some(ns), RELEASE),
        "Role",
        RELEASE,
        ns,
    );
    let cluster_name = format!("{ns}-{RELEASE}");
    assert_eq!(
        rules_of(find(objects, "ClusterRole", None, &cluster_name)),
        rules_file("chart/files/clusterrole-rules.yaml")
    );
    check_binding(
        find(objects, "ClusterRoleBinding", None, &cluster_name),
        "ClusterRole",
        &cluster_name,
        ns,
    );
    let env = rendered_env(objects, ns);
    assert_eq!(
        env["POD_NAMESPACE"], "fieldRef:metadata.namespace",
        "{env:?}"
    );
    assert_eq!(env["POD_NAME"], "fieldRef:metadata.name", "{env:?}");
}

/// check_binding checks that `binding` grants `role_kind` `role` to the
/// chart's ServiceAccount in `ns`.
fn check_binding(binding: &DynamicObject, role_kind: &str, role: &str, ns: &str) {
    assert_eq!(binding.data["roleRef"]["kind"], role_kind, "{binding:?}");
    assert_eq!(binding.data["roleRef"]["name"], role, "{binding:?}");
    let subjects = binding.data["subjects"]
        .as_array()
        .expect("the binding has subjects");
    assert_eq!(subjects.len(), 1, "{binding:?}");
    assert_eq!(subjects[0]["kind"], "ServiceAccount", "{binding:?}");
    assert_eq!(subjects[0]["name"], RELEASE, "{binding:?}");
    assert_eq!(subjects[0]["namespace"], ns, "{binding:?}");
}

#[test]
fn helm_lint_passes() {
    let (stdout, stderr) = helm(&["lint", "--strict", "chart/"]);
    assert!(
        stdout.contains("1 chart(s) linted, 0 chart(s) failed"),
        "{stdout}\n{stderr}"
    );
    assert!(
        !stdout.contains("[WARNING]") && !stdout.contains("[ERROR]"),
        "{stdout}"
    );
}

#[test]
fn default_values_render_locking_on_in_the_release_namespace() {
    let objects = render("sg-render", &[]);
    check_common(&objects, "sg-render");
    let env = rendered_env(&objects, "sg-render");
    assert_eq!(env["GATEWAY_ENABLE_DISTRIBUTED_LOCKING"], "true", "{env:?}");
    assert_eq!(env["GATEWAY_LOCK_NAMESPACE"], "sg-render", "{env:?}");
    assert_eq!(env["GATEWAY_LOCK_DURATION_SECONDS"], "30", "{env:?}");
    assert_eq!(env["GATEWAY_LOCK_WAIT_MS"], "5000", "{env:?}");
    assert_eq!(env["GATEWAY_AUTH"], "tokenreview", "{env:?}");
    assert!(!env.contains_key("GATEWAY_AUTH_TOKEN_FILE"), "{env:?}");
    assert_eq!(env["GATEWAY_AUTH_AUDIENCE"], "signal-gateway", "{env:?}");
    assert_eq!(
        env["GATEWAY_AUTH_RESOURCE"], "signals.signal-gateway.kubernaut.ai",
        "a virtual resource: the senders' grant creates nothing: {env:?}"
    );
    assert!(!env.contains_key("GATEWAY_CLUSTER_ID"), "{env:?}");
    // Dual-stack by default (the_gateway_listening_on_any_ipv6_address_serves_ipv4_too).
    assert_eq!(env["GATEWAY_LISTEN_ADDR"], "[::]:8080", "{env:?}");
    assert_eq!(env["GATEWAY_METRICS_ADDR"], "[::]:9090", "{env:?}");
    for absent in [
        "HorizontalPodAutoscaler",
        "NetworkPolicy",
        "Certificate",
        "Pod",
    ] {
        assert!(
            !objects.iter().any(|o| kind(o) == absent),
            "{absent} is opt-in: {:?}",
            summary(&objects)
        );
    }
    let deployment = find(&objects, "Deployment", Some("sg-render"), RELEASE);
    assert_eq!(deployment.data["spec"]["replicas"], 3);
    let roles: Vec<_> = objects.iter().filter(|o| kind(o) == "Role").collect();
    assert_eq!(roles.len(), 1, "one Role: {:?}", summary(&objects));
}

#[test]
fn the_senders_role_grants_exactly_what_the_gateway_checks() {
    let objects = render(
        "sg-render",
        &[
            "senders.audience=alerts",
            "senders.group=signals.example.com",
            "senders.resource=webhooks",
            "senders.serviceAccounts[0].name=alertmanager-main",
            "senders.serviceAccounts[0].namespace=monitoring",
        ],
    );
    let env = rendered_env(&objects, "sg-render");
    assert_eq!(env["GATEWAY_AUTH_AUDIENCE"], "alerts", "{env:?}");
    assert_eq!(
        env["GATEWAY_AUTH_RESOURCE"], "webhooks.signals.example.com",
        "{env:?}"
    );
    let sender = format!("{RELEASE}-sender");
    let rules = rules_of(find(&objects, "Role", Some("sg-render"), &sender));
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert_eq!(
        rules[0].api_groups,
        Some(vec!["signals.example.com".to_owned()])
    );
    assert_eq!(rules[0].resources, Some(vec!["webhooks".to_owned()]));
    assert_eq!(rules[0].verbs, vec!["create".to_owned()]);
    let binding = find(&objects, "RoleBinding", Some("sg-render"), &sender);
    assert_eq!(
        binding.data["subjects"],
        serde_json::json!([{"kind": "ServiceAccount", "name": "alertmanager-main", "namespace": "monitoring"}])
    );
}

#[test]
fn set_values_reach_the_gateway_environment_and_rbac() {
    let objects = render(
        "sg-render",
        &[
            "lockNamespace=sg-locks",
            "distributedLocking=false",
            "lockDurationSeconds=45",
            "auth=bearer",
            "bearerTokenSecret=sg-token",
            "clusterId=eu-1",
        ],
    );
    check_common(&objects, "sg-render");
    let env = rendered_env(&objects, "sg-render");
    assert_eq!(
        env["GATEWAY_ENABLE_DISTRIBUTED_LOCKING"], "false",
        "{env:?}"
    );
    assert_eq!(env["GATEWAY_LOCK_NAMESPACE"], "sg-locks", "{env:?}");
    assert_eq!(env["GATEWAY_LOCK_DURATION_SECONDS"], "45", "{env:?}");
    assert_eq!(env["GATEWAY_AUTH"], "bearer", "{env:?}");
    assert_eq!(env["GATEWAY_CLUSTER_ID"], "eu-1", "{env:?}");
    assert_eq!(
        env["GATEWAY_AUTH_TOKEN_FILE"], "/var/run/secrets/signal-gateway/bearer/token",
        "{env:?}"
    );
    assert!(!env.contains_key("GATEWAY_AUTH_AUDIENCE"), "{env:?}");
    let deployment = serde_json::to_value(find(&objects, "Deployment", Some("sg-render"), RELEASE))
        .expect("Deployment as JSON");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(
        pod["volumes"][0]["secret"]["secretName"], "sg-token",
        "{pod}"
    );
    assert_eq!(
        pod["containers"][0]["volumeMounts"][0]["mountPath"],
        "/var/run/secrets/signal-gateway/bearer",
        "{pod}"
    );
    assert_eq!(
        rules_of(find(&objects, "Role", Some("sg-locks"), RELEASE)),
        rules_file("chart/files/role-rules.yaml")
    );
    check_binding(
        find(&objects, "RoleBinding", Some("sg-locks"), RELEASE),
        "Role",
        RELEASE,
        "sg-render",
    );
}

/// grants lists every (API group, resource, verb) that `rules` allow.
fn grants(rules: &[PolicyRule]) -> BTreeSet<(String, String, String)> {
    let mut all = BTreeSet::new();
    for r in rules {
        assert!(
            r.resource_names.is_none() && r.non_resource_urls.is_none(),
            "{r:?}"
        );
        for g in r.api_groups.iter().flatten() {
            for res in r.resources.iter().flatten() {
                for v in &r.verbs {
                    all.insert((g.clone(), res.clone(), v.clone()));
                }
            }
        }
    }
    all
}

/// gets is the set of `get` grants on `(group, resource)` pairs.
fn gets(resources: &[(&str, &str)]) -> BTreeSet<(String, String, String)> {
    resources
        .iter()
        .map(|(g, r)| ((*g).to_owned(), (*r).to_owned(), "get".to_owned()))
        .collect()
}

/// OWNER_READS are what owner resolution reads.
const OWNER_READS: [(&str, &str); 3] = [("", "pods"), ("apps", "replicasets"), ("batch", "jobs")];

/// SCOPE_READS are the namespaced kinds whose scope label `scope=managed` reads.
const SCOPE_READS: [(&str, &str); 10] = [
    ("", "pods"),
    ("", "services"),
    ("", "persistentvolumeclaims"),
    ("apps", "deployments"),
    ("apps", "statefulsets"),
    ("apps", "daemonsets"),
    ("apps", "replicasets"),
    ("batch", "jobs"),
    ("batch", "cronjobs"),
    ("autoscaling", "horizontalpodautoscalers"),
];

/// SCOPE_CLUSTER_READS are the cluster-scoped kinds whose scope label `scope=managed` reads.
const SCOPE_CLUSTER_READS: [(&str, &str); 3] =
    [("", "namespaces"), ("", "nodes"), ("", "persistentvolumes")];

/// reads lists the rendered objects named `<release>-reads` or `<ns>-<release>-reads`.
fn reads(objects: &[DynamicObject]) -> Vec<String> {
    summary(objects)
        .into_iter()
        .filter(|o| o.ends_with(&format!("{RELEASE}-reads")))
        .collect()
}

#[test]
fn default_values_grant_the_owner_reads_cluster_wide() {
    let objects = render("sg-render", &[]);
    check_common(&objects, "sg-render");
    let env = rendered_env(&objects, "sg-render");
    assert_eq!(env["GATEWAY_OWNER_RESOLUTION"], "true", "{env:?}");
    assert_eq!(env["GATEWAY_SCOPE"], "all", "{env:?}");
    let name = format!("sg-render-{RELEASE}-reads");
    let rules = rules_of(find(&objects, "ClusterRole", None, &name));
    assert_eq!(rules, rules_file("chart/files/owner-rules.yaml"));
    assert_eq!(grants(&rules), gets(&OWNER_READS), "get only, nothing else");
    check_binding(
        find(&objects, "ClusterRoleBinding", None, &name),
        "ClusterRole",
        &name,
        "sg-render",
    );
    assert_eq!(
        reads(&objects),
        [
            format!("ClusterRole /{name}"),
            format!("ClusterRoleBinding /{name}")
        ]
    );
}

#[test]
fn listed_namespaces_get_the_owner_reads_in_a_role_each() {
    let objects = render("sg-render", &["ownerResolution.namespaces={sg-a,sg-b}"]);
    check_common(&objects, "sg-render");
    let name = format!("{RELEASE}-reads");
    for ns in ["sg-a", "sg-b"] {
        let rules = rules_of(find(&objects, "Role", Some(ns), &name));
        assert_eq!(rules, rules_file("chart/files/owner-rules.yaml"));
        assert_eq!(grants(&rules), gets(&OWNER_READS));
        check_binding(
            find(&objects, "RoleBinding", Some(ns), &name),
            "Role",
            &name,
            "sg-render",
        );
    }
    assert_eq!(
        reads(&objects),
        [
            format!("Role sg-a/{name}"),
            format!("Role sg-b/{name}"),
            format!("RoleBinding sg-a/{name}"),
            format!("RoleBinding sg-b/{name}"),
        ],
        "no reads ClusterRole"
    );
}

#[test]
fn owner_resolution_off_grants_no_reads() {
    for sets in [
        &["ownerResolution.enabled=false"][..],
        &[
            "ownerResolution.enabled=false",
            "ownerResolution.namespaces={sg-a}",
        ],
    ] {
        let objects = render("sg-render", sets);
        check_common(&objects, "sg-render");
        let env = rendered_env(&objects, "sg-render");
        assert_eq!(env["GATEWAY_OWNER_RESOLUTION"], "false", "{env:?}");
        assert!(
            reads(&objects).is_empty(),
            "{sets:?}: {:?}",
            reads(&objects)
        );
    }
}

#[test]
fn scope_managed_adds_the_label_reads_and_the_environment() {
    let cluster = format!("sg-render-{RELEASE}-reads");
    let objects = render("sg-render", &["scope=managed"]);
    check_common(&objects, "sg-render");
    let env = rendered_env(&objects, "sg-render");
    assert_eq!(env["GATEWAY_SCOPE"], "managed", "{env:?}");
    assert_eq!(env["GATEWAY_OWNER_RESOLUTION"], "true", "{env:?}");
    let rules = rules_of(find(&objects, "ClusterRole", None, &cluster));
    let want: Vec<_> = [
        "chart/files/owner-rules.yaml",
        "chart/files/scope-rules.yaml",
        "chart/files/scope-cluster-rules.yaml",
    ]
    .into_iter()
    .flat_map(rules_file)
    .collect();
    assert_eq!(rules, want);
    assert_eq!(
        grants(&rules),
        &(&gets(&SCOPE_READS) | &gets(&OWNER_READS)) | &gets(&SCOPE_CLUSTER_READS)
    );

    // Listed namespaces: the namespaced reads there, the cluster-scoped ones
    // still in the ClusterRole.
    let objects = render(
        "sg-render",
        &["scope=managed", "ownerResolution.namespaces={sg-a}"],
    );
    let role = rules_of(find(
        &objects,
        "Role",
        Some("sg-a"),
        &format!("{RELEASE}-reads"),
    ));
    assert_eq!(grants(&role), &gets(&SCOPE_READS) | &gets(&OWNER_READS));
    let rules = rules_of(find(&objects, "ClusterRole", None, &cluster));
    assert_eq!(rules, rules_file("chart/files/scope-cluster-rules.yaml"));
    assert_eq!(grants(&rules), gets(&SCOPE_CLUSTER_READS));

    // Without owner resolution the scope label is still read.
    let objects = render(
        "sg-render",
        &["scope=managed", "ownerResolution.enabled=false"],
    );
    let env = rendered_env(&objects, "sg-render");
    assert_eq!(env["GATEWAY_OWNER_RESOLUTION"], "false", "{env:?}");
    let rules = rules_of(find(&objects, "ClusterRole", None, &cluster));
    assert_eq!(
        grants(&rules),
        &gets(&SCOPE_READS) | &gets(&SCOPE_CLUSTER_READS)
    );
}

#[test]
fn the_schema_refuses_bad_owner_resolution_and_scope_values() {
    let cases: [(&[&str], &str); 5] = [
        (&["scope=some"], "/scope"),
        (&["scope=Managed"], "/scope"),
        (
            &["ownerResolution.enabled=maybe"],
            "/ownerResolution/enabled",
        ),
        (
            &["ownerResolution.namespaces={Not_A_Namespace}"],
            "/ownerResolution/namespaces/0",
        ),
        (&["ownerResolution.namspaces={sg-a}"], "namspaces"),
    ];
    refused(&cases);
    render(
        "sg-render",
        &["scope=managed", "ownerResolution.namespaces={a,sg-b-0}"],
    );
}

/// refused asserts that rendering with each case's `--set`s fails with an error that
/// names the case's field.
fn refused(cases: &[(&[&str], &str)]) {
    for (sets, field) in cases {
        let mut args = vec!["template", RELEASE, "chart/", "--namespace", "sg-render"];
        for s in *sets {
            args.extend(["--set", s]);
        }
        let (ok, stdout, stderr) = run_helm(&args);
        assert!(!ok, "helm accepted {sets:?}:\n{stdout}");
        assert!(
            stderr.contains(field),
            "the error for {sets:?} names {field}:\n{stderr}"
        );
    }
}

#[test]
fn values_the_gateway_would_reject_at_start_up_fail_the_rendering() {
    // Each of these would otherwise install a Deployment whose pods exit at
    // start-up with a configuration error.
    let cases: [(&[&str], &str); 7] = [
        (&["auth=bearer"], "/bearerTokenSecret"),
        (&["auth=oidc"], "/auth"),
        (&["logFormat=xml"], "/logFormat"),
        (&["lockDurationSeconds=0"], "/lockDurationSeconds"),
        (&["lockDurationSeconds=901"], "/lockDurationSeconds"),
        (&["lockWaitMs=60001"], "/lockWaitMs"),
        (&["distributedLocking=maybe"], "/distributedLocking"),
    ];
    refused(&cases);
    // The boundaries themselves are accepted.
    render(
        "sg-render",
        &[
            "auth=bearer",
            "bearerTokenSecret=sg-token",
            "logFormat=text",
            "lockDurationSeconds=900",
            "lockWaitMs=60000",
            "auth=none",
        ],
    );
}

/// apply applies every object with server-side apply as the admin, the CRD
/// first, and waits until the CRD is established.
pub(crate) async fn apply(admin: &kube::Client, objects: &[DynamicObject]) {
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    let (crds, rest): (Vec<_>, Vec<_>) = objects
        .iter()
        .partition(|o| kind(o) == "CustomResourceDefinition");
    for obj in crds.iter().chain(rest.iter()) {
        let types = obj.types.as_ref().expect("typed object");
        let gvk = GroupVersionKind::try_from(types).expect("a valid apiVersion");
        let (resource, caps) = pinned_kind(admin, &gvk)
            .await
            .unwrap_or_else(|e| panic!("discovering {gvk:?}: {e}"));
        let name = obj.metadata.name.as_deref().expect("named object");
        let api: Api<DynamicObject> = match caps.scope {
            Scope::Namespaced => {
                let ns =
                    obj.metadata.namespace.as_deref().unwrap_or_else(|| {
                        panic!("{} {name} renders without a namespace", kind(obj))
                    });
                Api::namespaced_with(admin.clone(), ns, &resource)
            }
            Scope::Cluster => Api::all_with(admin.clone(), &resource),
        };
        api.patch(name, &pp, &Patch::Apply(obj))
            .await
            .unwrap_or_else(|e| panic!("applying {} {name}: {e}", kind(obj)));
    }
    for crd in crds {
        let name = crd.metadata.name.as_deref().expect("named CRD");
        if let Err(e) = testenv::wait_established(admin, name).await {
            panic!("{e}");
        }
    }
}

/// service_account_client is a client that authenticates with a token of the
/// chart's ServiceAccount in `ns`, from the TokenRequest API; it returns the
/// token too.
pub(crate) async fn service_account_client(
    cp: &ControlPlane,
    ns: &str,
    account: &str,
) -> (kube::Client, String) {
    let request = TokenRequest {
        metadata: ObjectMeta::default(),
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(600),
            ..TokenRequestSpec::default()
        }),
        status: None,
    };
    let issued = Api::<ServiceAccount>::namespaced(cp.admin_client(), ns)
        .create_token_request(account, &PostParams::default(), &request)
        .await
        .expect("requesting a token for the chart's ServiceAccount");
    let token = issued
        .status
        .and_then(|s| s.token)
        .filter(|t| !t.is_empty())
        .expect("the TokenRequest returned a token");

    // The kubeconfig carries the server address and CA; swap in the token.
    let mut kubeconfig =
        Kubeconfig::read_from(cp.kubeconfig_path(Identity::Nobody)).expect("reading a kubeconfig");
    assert_eq!(kubeconfig.auth_infos.len(), 1, "one user in the kubeconfig");
    let auth = kubeconfig.auth_infos[0]
        .auth_info
        .as_mut()
        .expect("the kubeconfig's user");
    auth.token = Some(token.clone().into());
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("a client configuration");
    let client = kube::Client::try_from(config).expect("a ServiceAccount client");
    (client, token)
}

/// wait_allowed waits until the chart's ServiceAccount may `verb` `resource`
/// in `namespace`; a binding that never applies fails the test.
async fn wait_allowed(
    client: &kube::Client,
    namespace: &str,
    group: &str,
    resource: &str,
    verb: &str,
) {
    if let Err(e) = testenv::wait_allowed(client, namespace, group, resource, verb).await {
        panic!("the chart's ServiceAccount {e}");
    }
}

fn test_lease() -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some("sg-test".to_owned()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some("chart-test/0".to_owned()),
            lease_duration_seconds: Some(30),
            ..LeaseSpec::default()
        }),
    }
}

/// lease_round_trip creates, reads and deletes Lease `sg-test` in `ns` as
/// the ServiceAccount, once RBAC allows it.
async fn lease_round_trip(sa: &kube::Client, ns: &str) {
    wait_allowed(sa, ns, "coordination.k8s.io", "leases", "create").await;
    let leases: Api<Lease> = Api::namespaced(sa.clone(), ns);
    leases
        .create(&PostParams::default(), &test_lease())
        .await
        .unwrap_or_else(|e| panic!("creating Lease {ns}/sg-test as the ServiceAccount: {e}"));
    let read = leases.get("sg-test").await.expect("reading the Lease");
    assert_eq!(
        read.spec.and_then(|s| s.holder_identity).as_deref(),
        Some("chart-test/0")
    );
    leases
        .delete("sg-test", &DeleteParams::default())
        .await
        .unwrap_or_else(|e| panic!("deleting Lease {ns}/sg-test as the ServiceAccount: {e}"));
    let gone = leases.get_opt("sg-test").await.expect("reading the Lease");
    assert!(gone.is_none(), "the Lease is still there after delete");
}

/// forbidden asserts that `result` is a 403.
fn forbidden<T: std::fmt::Debug>(result: Result<T, kube::Error>, what: &str) {
    match result {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403, "{what}: {status:?}"),
        Err(other) => panic!("{what}: expected 403, got {other}"),
        Ok(v) => panic!("{what}: expected 403, got success: {v:?}"),
    }
}

/// install renders the chart for a fresh namespace with `sets`, applies it,
/// and checks that the Deployment the API server stored carries the
/// environment the rendering had.
async fn install(cp: &ControlPlane, ns: &str, sets: &[&str]) -> BTreeMap<String, String> {
    let objects = render(ns, sets);
    check_common(&objects, ns);
    let admin = cp.admin_client();
    apply(&admin, &objects).await;
    let stored = Api::<Deployment>::namespaced(admin.clone(), ns)
        .get(RELEASE)
        .await
        .expect("reading the applied Deployment");
    let env = gateway_env(&serde_json::to_value(stored).expect("Deployment as JSON"));
    assert_eq!(
        env,
        rendered_env(&objects, ns),
        "the API server kept the env"
    );
    Api::<ServiceAccount>::namespaced(admin, ns)
        .get(RELEASE)
        .await
        .expect("the chart's ServiceAccount exists");
    env
}

#[tokio::test]
async fn the_installed_chart_lets_its_service_account_lease_and_review_tokens() {
    let cp = testenv::shared();
    let ns = cp.new_namespace().await.expect("a test namespace");
    let elsewhere = cp.new_namespace().await.expect("a second namespace");
    let env = install(cp, ns.name(), &[]).await;
    assert_eq!(env["GATEWAY_LOCK_NAMESPACE"], ns.name());
    assert_eq!(env["GATEWAY_ENABLE_DISTRIBUTED_LOCKING"], "true");
    // Applying again changes nothing and fails nothing.
    apply(&cp.admin_client(), &render(ns.name(), &[])).await;

    let (sa, token) = service_account_client(cp, ns.name(), RELEASE).await;
    lease_round_trip(&sa, ns.name()).await;

    wait_allowed(&sa, "", "authentication.k8s.io", "tokenreviews", "create").await;
    let review = TokenReview {
        spec: TokenReviewSpec {
            token,
            ..TokenReviewSpec::default()
        },
        ..TokenReview::default()
    };
    let reviewed = Api::<TokenReview>::all(sa.clone())
        .create(&PostParams::default(), &review)
        .await
        .expect("creating a TokenReview as the ServiceAccount");
    let status = reviewed.status.expect("a TokenReview status");
    assert_eq!(status.authenticated, Some(true), "{status:?}");
    assert_eq!(
        status.user.and_then(|u| u.username).as_deref(),
        Some(format!("system:serviceaccount:{}:{RELEASE}", ns.name()).as_str())
    );

    // The Role is granted in the release namespace only, and grants nothing
    // beyond its rules.
    forbidden(
        Api::<Lease>::namespaced(sa.clone(), elsewhere.name())
            .create(&PostParams::default(), &test_lease())
            .await,
        "creating a Lease in a namespace without the chart's Role",
    );
    forbidden(
        Api::<Secret>::namespaced(sa.clone(), ns.name())
            .list(&ListParams::default())
            .await,
        "listing Secrets in the release namespace",
    );
    forbidden(
        Api::<Lease>::namespaced(sa.clone(), ns.name())
            .delete_collection(&DeleteParams::default(), &ListParams::default())
            .await,
        "deleting every Lease at once (deletecollection is not granted)",
    );

    // Owner resolution reads by name, metadata only, in every namespace (the
    // default ClusterRole), and nothing more: no list, no Secrets.
    for (group, resource) in OWNER_READS {
        wait_allowed(&sa, elsewhere.name(), group, resource, "get").await;
    }
    for at in [ns.name(), elsewhere.name()] {
        let absent = Api::<Pod>::namespaced(sa.clone(), at)
            .get_metadata_opt("sg-absent")
            .await
            .unwrap_or_else(|e| {
                panic!("reading a Pod's metadata in {at} as the ServiceAccount: {e}")
            });
        assert!(absent.is_none(), "{absent:?}");
    }
    forbidden(
        Api::<Pod>::namespaced(sa.clone(), ns.name())
            .list(&ListParams::default())
            .await,
        "listing Pods",
    );
    forbidden(
        Api::<Secret>::namespaced(sa.clone(), ns.name())
            .get("sg-absent")
            .await,
        "getting a Secret",
    );
    forbidden(
        Api::<Node>::all(sa).get("sg-absent").await,
        "getting a Node (scope=all reads no label)",
    );
}

#[tokio::test]
async fn with_listed_namespaces_and_scope_managed_the_service_account_reads_only_there() {
    let cp = testenv::shared();
    let ns = cp.new_namespace().await.expect("a test namespace");
    let signals = cp
        .new_namespace()
        .await
        .expect("a namespace signals come from");
    let elsewhere = cp.new_namespace().await.expect("a third namespace");
    let listed = format!("ownerResolution.namespaces={{{}}}", signals.name());
    let env = install(cp, ns.name(), &[listed.as_str(), "scope=managed"]).await;
    assert_eq!(env["GATEWAY_SCOPE"], "managed");
    assert_eq!(env["GATEWAY_OWNER_RESOLUTION"], "true");

    let (sa, _) = service_account_client(cp, ns.name(), RELEASE).await;
    for (group, resource) in SCOPE_READS {
        wait_allowed(&sa, signals.name(), group, resource, "get").await;
    }
    for (group, resource) in SCOPE_CLUSTER_READS {
        wait_allowed(&sa, "", group, resource, "get").await;
    }
    let read = Api::<Namespace>::all(sa.clone())
        .get_metadata(signals.name())
        .await
        .expect("reading a Namespace's metadata as the ServiceAccount");
    assert_eq!(read.metadata.name.as_deref(), Some(signals.name()));
    let absent = Api::<Deployment>::namespaced(sa.clone(), signals.name())
        .get_metadata_opt("sg-absent")
        .await
        .expect("reading a Deployment's metadata as the ServiceAccount");
    assert!(absent.is_none(), "{absent:?}");
    for at in [elsewhere.name(), ns.name()] {
        forbidden(
            Api::<Pod>::namespaced(sa.clone(), at)
                .get_metadata("sg-absent")
                .await,
            "reading a Pod in a namespace not listed",
        );
    }
    forbidden(
        Api::<Namespace>::all(sa.clone())
            .list(&ListParams::default())
            .await,
        "listing Namespaces",
    );
    forbidden(
        Api::<Pod>::namespaced(sa, signals.name())
            .list(&ListParams::default())
            .await,
        "listing Pods",
    );
}

#[tokio::test]
async fn with_a_lock_namespace_the_service_account_may_lease_there() {
    let cp = testenv::shared();
    let ns = cp.new_namespace().await.expect("a test namespace");
    let locks = cp.new_namespace().await.expect("a lock namespace");
    let elsewhere = cp.new_namespace().await.expect("a third namespace");
    let lock_set = format!("lockNamespace={}", locks.name());
    let env = install(
        cp,
        ns.name(),
        &[lock_set.as_str(), "distributedLocking=false"],
    )
    .await;
    assert_eq!(env["GATEWAY_LOCK_NAMESPACE"], locks.name());
    assert_eq!(env["GATEWAY_ENABLE_DISTRIBUTED_LOCKING"], "false");

    let (sa, _) = service_account_client(cp, ns.name(), RELEASE).await;
    lease_round_trip(&sa, locks.name()).await;
    lease_round_trip(&sa, ns.name()).await;
    forbidden(
        Api::<Lease>::namespaced(sa, elsewhere.name())
            .create(&PostParams::default(), &test_lease())
            .await,
        "creating a Lease in a namespace without the chart's Role",
    );
}

/// template_spec is the Deployment's pod template spec as JSON.
fn template_spec(objects: &[DynamicObject], ns: &str) -> Value {
    let deployment = serde_json::to_value(find(objects, "Deployment", Some(ns), RELEASE))
        .expect("Deployment as JSON");
    deployment["spec"]["template"].clone()
}

#[test]
fn every_object_carries_the_standard_labels_and_selectors_stay_stable() {
    let objects = render("sg-render", &[]);
    let chart: serde_yaml_ng::Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(testenv::repo_root().join("chart/Chart.yaml"))
            .expect("Chart.yaml"),
    )
    .expect("Chart.yaml is YAML");
    let version = chart["version"].as_str().expect("version");
    let app_version = chart["appVersion"].as_str().expect("appVersion");
    assert_eq!(
        chart["kubeVersion"].as_str(),
        Some(">=1.32.0-0"),
        "selectable fields are GA in 1.32"
    );
    for obj in &objects {
        let labels = obj.metadata.labels.clone().unwrap_or_default();
        let want = [
            ("app.kubernetes.io/name", "signal-gateway"),
            ("app.kubernetes.io/instance", RELEASE),
            ("app.kubernetes.io/version", app_version),
            ("app.kubernetes.io/managed-by", "Helm"),
            ("helm.sh/chart", &format!("signal-gateway-{version}")),
        ];
        for (k, v) in want {
            assert_eq!(labels.get(k).map(String::as_str), Some(v), "{k} on {obj:?}");
        }
    }
    // Selectors hold only the two labels that never change between versions.
    let selector = serde_json::json!({
        "app.kubernetes.io/name": "signal-gateway",
        "app.kubernetes.io/instance": RELEASE,
    });
    let deployment = find(&objects, "Deployment", Some("sg-render"), RELEASE);
    assert_eq!(deployment.data["spec"]["selector"]["matchLabels"], selector);
    let service = find(&objects, "Service", Some("sg-render"), RELEASE);
    assert_eq!(service.data["spec"]["selector"], selector);
    let pdb = find(&objects, "PodDisruptionBudget", Some("sg-render"), RELEASE);
    assert_eq!(pdb.data["spec"]["selector"]["matchLabels"], selector);
    assert_eq!(pdb.data["spec"]["maxUnavailable"], 1);

    let template = template_spec(&objects, "sg-render");
    let spread = template["spec"]["topologySpreadConstraints"]
        .as_array()
        .expect("topology spread constraints");
    let keys: Vec<_> = spread.iter().map(|c| c["topologyKey"].clone()).collect();
    assert_eq!(
        keys,
        ["kubernetes.io/hostname", "topology.kubernetes.io/zone"]
    );
    for c in spread {
        assert_eq!(c["labelSelector"]["matchLabels"], selector, "{c}");
    }
    // The default image is the one hack/image.sh builds.
    let (repository, app) = crate::image::chart_image();
    assert_eq!(
        template["spec"]["containers"][0]["image"],
        format!("{repository}:{app}")
    );
    let pre_stop = &template["spec"]["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"];
    assert_eq!(pre_stop, 5);
    let env = rendered_env(&objects, "sg-render");
    assert_eq!(env["GATEWAY_SHUTDOWN_TIMEOUT_SECONDS"], "20", "{env:?}");
    assert!(
        template["spec"]["terminationGracePeriodSeconds"]
            .as_i64()
            .is_some_and(|g| g > 5 + 20),
        "the grace period covers the preStop sleep and the drain"
    );
}

#[test]
fn scheduling_and_account_values_reach_the_pod_template() {
    let objects = render(
        "sg-render",
        &[
            "serviceAccount.name=sg-custom",
            "serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn=arn:aws:iam::1:role/sg",
            "nodeSelector.pool=infra",
            "tolerations[0].key=dedicated",
            "tolerations[0].operator=Exists",
            "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].key=arch",
            "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].operator=Exists",
            "podAnnotations.team=sre",
            "podLabels.tier=ingest",
            "priorityClassName=high",
            "imagePullSecrets[0].name=regcred",
            "image.digest=sha256:0000000000000000000000000000000000000000000000000000000000000000",
            "podDisruptionBudget.minAvailable=2",
            "topologySpread.enabled=false",
        ],
    );
    let sa = find(&objects, "ServiceAccount", Some("sg-render"), "sg-custom");
    assert_eq!(
        sa.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("eks.amazonaws.com/role-arn"))
            .map(String::as_str),
        Some("arn:aws:iam::1:role/sg")
    );
    for kind_ in ["RoleBinding", "ClusterRoleBinding"] {
        for b in objects.iter().filter(|o| kind(o) == kind_) {
            assert_eq!(b.data["subjects"][0]["name"], "sg-custom", "{b:?}");
        }
    }
    let t = template_spec(&objects, "sg-render");
    let spec = &t["spec"];
    assert_eq!(spec["serviceAccountName"], "sg-custom");
    assert_eq!(spec["nodeSelector"]["pool"], "infra");
    assert_eq!(spec["tolerations"][0]["key"], "dedicated");
    assert_eq!(
        spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
            [0]["matchExpressions"][0]["key"],
        "arch"
    );
    assert_eq!(t["metadata"]["annotations"]["team"], "sre");
    assert_eq!(t["metadata"]["labels"]["tier"], "ingest");
    assert_eq!(spec["priorityClassName"], "high");
    assert_eq!(spec["imagePullSecrets"][0]["name"], "regcred");
    assert!(spec["topologySpreadConstraints"].is_null(), "{spec}");
    assert!(
        spec["containers"][0]["image"].as_str().is_some_and(|i| i
            .ends_with("@sha256:0000000000000000000000000000000000000000000000000000000000000000")),
        "{}",
        spec["containers"][0]["image"]
    );
    let pdb = find(&objects, "PodDisruptionBudget", Some("sg-render"), RELEASE);
    assert_eq!(pdb.data["spec"]["minAvailable"], 2);
    assert!(pdb.data["spec"]["maxUnavailable"].is_null());

    // Without a Deployment (the Knative recipe): the CRD, account and RBAC only.
    let objects = render("sg-render", &["deployment.enabled=false"]);
    let kinds: std::collections::BTreeSet<_> = objects.iter().map(kind).collect();
    assert!(
        !kinds.contains("Deployment")
            && !kinds.contains("Service")
            && !kinds.contains("PodDisruptionBudget"),
        "{kinds:?}"
    );
    find(&objects, "ServiceAccount", Some("sg-render"), RELEASE);
    find(&objects, "RoleBinding", Some("sg-render"), RELEASE);
}

#[test]
fn the_schema_rejects_unknown_values_and_what_the_gateway_refuses() {
    let cases: [(&[&str], &str); 10] = [
        (&["replicaCont=3"], "replicaCont"),
        (&["image.tags=1"], "tags"),
        (&["serviceAccount.nam=x"], "nam"),
        (&["lockDurationSeconds=3601"], "/lockDurationSeconds"),
        (&["apiTimeoutMs=0"], "/apiTimeoutMs"),
        // Each in range, but the gateway refuses an API timeout as long as the lease.
        (&["lockDurationSeconds=5"], "GATEWAY_API_TIMEOUT_MS"),
        (
            &["lockDurationSeconds=10", "apiTimeoutMs=10000"],
            "GATEWAY_API_TIMEOUT_MS",
        ),
        (&["lockNamespace=Not_A_Namespace"], "/lockNamespace"),
        (
            &["terminationGracePeriodSeconds=20"],
            "terminationGracePeriodSeconds",
        ),
        (&["image.pullPolicy=Sometimes"], "/image/pullPolicy"),
    ];
    refused(&cases);
    // The closest accepted neighbours.
    render(
        "sg-render",
        &[
            "lockDurationSeconds=6",
            "apiTimeoutMs=5999",
            "terminationGracePeriodSeconds=26",
        ],
    );
}

/// restricted labels `ns` so that Pod Security admission enforces "restricted".
async fn restricted(admin: &kube::Client, ns: &str) {
    let patch = serde_json::json!({"metadata": {"labels": {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest",
    }}});
    Api::<k8s_openapi::api::core::v1::Namespace>::all(admin.clone())
        .patch(ns, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("labelling the namespace restricted");
}

#[tokio::test]
async fn the_pod_template_passes_pod_security_restricted() {
    let cp = testenv::shared();
    let ns = cp.new_namespace().await.expect("a test namespace");
    let admin = cp.admin_client();
    restricted(&admin, ns.name()).await;
    install(cp, ns.name(), &[]).await;
    let deployment = Api::<Deployment>::namespaced(admin.clone(), ns.name())
        .get(RELEASE)
        .await
        .expect("the applied Deployment");
    // Enforcement applies to Pods (a Deployment only warns): create the pod
    // the ReplicaSet would create, as a server-side dry run.
    let pods = Api::<k8s_openapi::api::core::v1::Pod>::namespaced(admin, ns.name());
    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let pod = pod_from_template(&deployment, "sg-restricted");
    pods.create(&dry, &pod)
        .await
        .unwrap_or_else(|e| panic!("the chart's pod is refused under restricted: {e}"));

    // The check is live: the same pod without its seccomp profile is refused.
    let mut weakened = pod_from_template(&deployment, "sg-weakened");
    let spec = weakened.spec.as_mut().expect("a pod spec");
    if let Some(sc) = spec.security_context.as_mut() {
        sc.seccomp_profile = None;
    }
    for c in &mut spec.containers {
        if let Some(sc) = c.security_context.as_mut() {
            sc.seccomp_profile = None;
        }
    }
    match pods.create(&dry, &weakened).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 403, "{status:?}");
            assert!(status.message.contains("restricted"), "{status:?}");
        }
        other => panic!("a pod without seccompProfile was not refused: {other:?}"),
    }
}

#[tokio::test]
async fn notes_give_the_in_cluster_url_and_an_alertmanager_receiver_per_auth_mode() {
    let cp = testenv::shared();
    let ns = cp.new_namespace().await.expect("a test namespace");
    let kubeconfig = cp.kubeconfig_path(Identity::Admin);
    let kubeconfig = kubeconfig.to_str().expect("UTF-8");
    for (sets, want) in [
        (
            vec![],
            "credentials_file: /var/run/secrets/signal-gateway/token",
        ),
        (
            vec!["auth=bearer", "bearerTokenSecret=sg-token"],
            "credentials_file: /etc/alertmanager/secrets/sg-token/token",
        ),
        (vec!["auth=none"], "auth=none"),
        (
            vec!["tls.enabled=true", "tls.existingSecret=sg-tls"],
            "ca_file: /etc/alertmanager/secrets/sg-tls/ca.crt",
        ),
        (
            vec!["auth=none", "tls.enabled=true", "tls.existingSecret=sg-tls"],
            "ca_file: /etc/alertmanager/secrets/sg-tls/ca.crt",
        ),
        (
            vec![
                "auth=clientcert",
                "tls.enabled=true",
                "tls.existingSecret=sg-tls",
                "tls.clientCA.secret=senders-ca",
            ],
            "cert_file: /etc/alertmanager/secrets/alertmanager-client/tls.crt",
        ),
    ] {
        let tls = sets.contains(&"tls.enabled=true");
        let url = format!(
            "{}://{RELEASE}.{}.svc:8080/api/v1/signals/prometheus",
            if tls { "https" } else { "http" },
            ns.name()
        );
        let mut args = vec![
            "install",
            RELEASE,
            "chart/",
            "--dry-run=server",
            "--namespace",
            ns.name(),
            "--kubeconfig",
            kubeconfig,
            // The shared control plane has the CRD, installed without Helm.
            "--set",
            "crds.install=false",
        ];
        for s in &sets {
            args.extend(["--set", s]);
        }
        let (stdout, _) = helm(&args);
        let notes = stdout
            .split_once("NOTES:")
            .map(|(_, n)| n)
            .unwrap_or_else(|| panic!("no NOTES:\n{stdout}"));
        assert!(notes.contains(&format!("- url: {url}")), "{notes}");
        assert!(notes.contains(want), "{sets:?}: {notes}");
        // The snippet is valid YAML with one webhook receiver.
        let snippet: String = notes
            .lines()
            .skip_while(|l| !l.starts_with("receivers:"))
            .collect::<Vec<_>>()
            .join("\n");
        let parsed: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(&snippet).expect("the snippet is YAML");
        let webhook = &parsed["receivers"][0]["webhook_configs"][0];
        assert_eq!(webhook["url"].as_str(), Some(url.as_str()));
        assert_eq!(
            webhook["http_config"]["tls_config"]["ca_file"].is_string(),
            tls,
            "{snippet}"
        );
    }
}

/// crd_of reads the RemediationRequest CRD from the API server.
async fn crd_of(
    admin: &kube::Client,
) -> k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition {
    Api::all(admin.clone())
        .get("remediationrequests.kubernaut.ai")
        .await
        .expect("the RemediationRequest CRD exists")
}

#[tokio::test]
async fn helm_installs_and_upgrades_the_crd_and_keeps_it_on_uninstall() {
    // A private control plane: the shared one's CRD was installed without Helm.
    let cp = ControlPlane::start()
        .await
        .expect("starting a private control plane");
    let ns = cp.new_namespace().await.expect("a test namespace");
    let kubeconfig = cp.kubeconfig_path(Identity::Admin);
    let kubeconfig = kubeconfig.to_str().expect("UTF-8");
    let admin = cp.admin_client();
    let base = [
        RELEASE,
        "chart/",
        "--namespace",
        ns.name(),
        "--kubeconfig",
        kubeconfig,
    ];
    helm(&[&["install"][..], &base].concat());
    let crd = crd_of(&admin).await;
    let annotations = crd.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(
        annotations
            .get("helm.sh/resource-policy")
            .map(String::as_str),
        Some("keep"),
        "{annotations:?}"
    );
    assert_eq!(
        annotations
            .get("meta.helm.sh/release-name")
            .map(String::as_str),
        Some(RELEASE),
        "the release owns the CRD: {annotations:?}"
    );
    let generated: Value = serde_json::to_value(
        testenv::read_crd(&testenv::repo_root().join("chart/files/remediationrequests.yaml"))
            .expect("the generated CRD"),
    )
    .expect("CRD as JSON");
    let stored = serde_json::to_value(&crd).expect("CRD as JSON");
    assert_eq!(
        stored["spec"]["versions"][0]["schema"], generated["spec"]["versions"][0]["schema"],
        "the template carries the generated schema unchanged"
    );
    // An upgrade that turns the CRD off neither deletes nor changes it.
    helm(&[&["upgrade"][..], &base, &["--set", "crds.install=false"]].concat());
    assert_eq!(crd_of(&admin).await.metadata.uid, crd.metadata.uid);
    helm(&[&["upgrade"][..], &base].concat());
    helm(&[
        "uninstall",
        RELEASE,
        "--namespace",
        ns.name(),
        "--kubeconfig",
        kubeconfig,
    ]);
    assert_eq!(
        crd_of(&admin).await.metadata.uid,
        crd.metadata.uid,
        "helm uninstall keeps the CRD, and with it every RR"
    );
    let deployments = Api::<Deployment>::namespaced(admin, ns.name())
        .list(&ListParams::default())
        .await
        .expect("listing Deployments");
    assert!(deployments.items.is_empty(), "uninstalled");
}

#[test]
fn crds_install_false_renders_no_crd_and_the_default_renders_the_generated_one() {
    let crds = |sets: &[&str]| {
        render("sg-render", sets)
            .into_iter()
            .filter(|o| kind(o) == "CustomResourceDefinition")
            .count()
    };
    assert_eq!(crds(&[]), 1);
    assert_eq!(crds(&["crds.install=false"]), 0);
    assert_eq!(crds(&["crds.install=false", "deployment.enabled=false"]), 0);
    let (ok, stdout, _) = run_helm(&["template", RELEASE, "chart/", "--set", "crds.install=maybe"]);
    assert!(!ok, "the schema takes only a boolean:\n{stdout}");
}

/// EXAMPLES are the values files of chart/examples, each of which must lint and render.
const EXAMPLES: [&str; 5] = [
    "chart/examples/values-openshift.yaml",
    "chart/examples/values-tls-cert-manager.yaml",
    "chart/examples/values-tls-secret.yaml",
    "chart/examples/values-clientcert.yaml",
    "chart/examples/values-autoscaling.yaml",
];

#[test]
fn helm_lint_and_template_pass_for_every_example_values_file() {
    let dir = testenv::repo_root().join("chart/examples");
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .expect("chart/examples")
        .map(|e| {
            format!(
                "chart/examples/{}",
                e.expect("an entry").file_name().to_string_lossy()
            )
        })
        .collect();
    on_disk.sort();
    let mut listed = EXAMPLES.map(str::to_owned).to_vec();
    listed.sort();
    assert_eq!(on_disk, listed, "every example is tested");
    for file in EXAMPLES {
        let (stdout, stderr) = helm(&["lint", "--strict", "chart/", "--values", file]);
        assert!(
            stdout.contains("1 chart(s) linted, 0 chart(s) failed")
                && !stdout.contains("[WARNING]"),
            "{file}: {stdout}\n{stderr}"
        );
        check_common(
            &render_files(RELEASE, "sg-render", &[file], &[]),
            "sg-render",
        );
    }
}

/// gateway_container is the gateway container of the rendered Deployment.
fn gateway_container(objects: &[DynamicObject], ns: &str) -> Value {
    template_spec(objects, ns)["spec"]["containers"][0].clone()
}

/// check_tls_pod checks that the pod serves HTTPS from Secret `secret`: the PEM paths in
/// the environment, the whole Secret mounted (no subPath, so that renewals reach the
/// files), the port and the Service named https, and probes over HTTPS.
fn check_tls_pod(objects: &[DynamicObject], secret: &str) {
    let env = rendered_env(objects, "sg-render");
    assert_eq!(
        env["GATEWAY_TLS_CERT_FILE"], "/var/run/secrets/signal-gateway/tls/tls.crt",
        "{env:?}"
    );
    assert_eq!(
        env["GATEWAY_TLS_KEY_FILE"], "/var/run/secrets/signal-gateway/tls/tls.key",
        "{env:?}"
    );
    let pod = template_spec(objects, "sg-render")["spec"].clone();
    let volume = pod["volumes"]
        .as_array()
        .and_then(|v| v.iter().find(|v| v["name"] == "tls"))
        .unwrap_or_else(|| panic!("a tls volume: {pod}"));
    assert_eq!(volume["secret"]["secretName"], secret, "{volume}");
    assert!(volume["secret"]["items"].is_null(), "{volume}");
    let container = gateway_container(objects, "sg-render");
    let mount = container["volumeMounts"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["name"] == "tls"))
        .unwrap_or_else(|| panic!("a tls mount: {container}"));
    assert_eq!(mount["mountPath"], "/var/run/secrets/signal-gateway/tls");
    assert!(mount["subPath"].is_null(), "{mount}");
    assert_eq!(container["ports"][0]["name"], "https", "{container}");
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(
            container[probe]["httpGet"]["scheme"], "HTTPS",
            "{container}"
        );
        assert_eq!(container[probe]["httpGet"]["port"], "https", "{container}");
    }
    let service = find(objects, "Service", Some("sg-render"), RELEASE);
    assert_eq!(
        service.data["spec"]["ports"][0]["name"], "https",
        "{service:?}"
    );
    assert_eq!(service.data["spec"]["ports"][0]["targetPort"], "https");
}

#[test]
fn tls_with_cert_manager_renders_a_certificate_for_the_service_names() {
    let objects = render_files(
        RELEASE,
        "sg-render",
        &["chart/examples/values-tls-cert-manager.yaml"],
        &["tls.certManager.dnsNames={gateway.example.com}"],
    );
    check_common(&objects, "sg-render");
    let cert = find(&objects, "Certificate", Some("sg-render"), RELEASE);
    assert_eq!(
        cert.types.as_ref().map(|t| t.api_version.as_str()),
        Some("cert-manager.io/v1")
    );
    let spec = &cert.data["spec"];
    assert_eq!(spec["secretName"], "sg-tls");
    assert_eq!(
        spec["issuerRef"],
        serde_json::json!({"name": "cluster-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"})
    );
    assert_eq!(
        spec["dnsNames"],
        serde_json::json!([
            "sg",
            "sg.sg-render",
            "sg.sg-render.svc",
            "sg.sg-render.svc.cluster.local",
            "gateway.example.com"
        ])
    );
    check_tls_pod(&objects, "sg-tls");
    assert!(
        !rendered_env(&objects, "sg-render").contains_key("GATEWAY_TLS_CLIENT_CA_FILE"),
        "client certificates are opt-in"
    );
}

#[test]
fn tls_with_an_existing_secret_mounts_it_and_renders_no_certificate() {
    let objects = render_files(
        RELEASE,
        "sg-render",
        &["chart/examples/values-tls-secret.yaml"],
        &["tls.clientCA.secret=senders-ca"],
    );
    check_common(&objects, "sg-render");
    assert!(!objects.iter().any(|o| kind(o) == "Certificate"));
    check_tls_pod(&objects, "signal-gateway-tls");
    let env = rendered_env(&objects, "sg-render");
    assert_eq!(
        env["GATEWAY_TLS_CLIENT_CA_FILE"], "/var/run/secrets/signal-gateway/client-ca/ca.crt",
        "{env:?}"
    );
    let pod = template_spec(&objects, "sg-render")["spec"].clone();
    assert!(
        pod["volumes"].as_array().is_some_and(|v| v
            .iter()
            .any(|v| v["name"] == "client-ca" && v["secret"]["secretName"] == "senders-ca")),
        "{pod}"
    );
    // Off: plain HTTP, nothing of TLS.
    let plain = render("sg-render", &[]);
    let env = rendered_env(&plain, "sg-render");
    assert!(
        !env.keys().any(|k| k.starts_with("GATEWAY_TLS_")),
        "{env:?}"
    );
    let container = gateway_container(&plain, "sg-render");
    assert_eq!(container["ports"][0]["name"], "http");
    assert_eq!(container["readinessProbe"]["httpGet"]["scheme"], "HTTP");
}

#[test]
fn the_clientcert_example_serves_https_and_accepts_only_client_certificates() {
    let objects = render_files(
        RELEASE,
        "sg-render",
        &["chart/examples/values-clientcert.yaml"],
        &[],
    );
    check_common(&objects, "sg-render");
    find(&objects, "Certificate", Some("sg-render"), RELEASE);
    check_tls_pod(&objects, "sg-tls");
    let env = rendered_env(&objects, "sg-render");
    assert_eq!(env["GATEWAY_AUTH"], "clientcert", "{env:?}");
    assert_eq!(
        env["GATEWAY_TLS_CLIENT_CA_FILE"], "/var/run/secrets/signal-gateway/client-ca/ca.crt",
        "{env:?}"
    );
    let pod = template_spec(&objects, "sg-render")["spec"].clone();
    assert!(
        pod["volumes"]
            .as_array()
            .is_some_and(|v| v.iter().any(|v| v["name"] == "client-ca"
                && v["secret"]["secretName"] == "signal-gateway-senders-ca")),
        "{pod}"
    );
}

#[test]
fn tls_needs_exactly_one_certificate_source() {
    let cases: [(&[&str], &str); 3] = [
        (
            &["tls.enabled=true"],
            "tls.existingSecret or tls.certManager.issuerRef",
        ),
        (
            &[
                "tls.enabled=true",
                "tls.existingSecret=x",
                "tls.certManager.issuerRef.name=ca",
            ],
            "exclude each other",
        ),
        (&["tls.certManager.issuerRef.nam=ca"], "nam"),
    ];
    refused(&cases);
}

#[test]
fn client_certificate_modes_need_a_client_ca_and_an_auth_mode_to_add_to() {
    let cases: [(&[&str], &str); 3] = [
        (&["auth=clientcert"], "auth=clientcert needs tls.enabled"),
        (
            &[
                "auth=clientcert",
                "tls.enabled=true",
                "tls.existingSecret=x",
            ],
            "tls.clientCA.secret",
        ),
        (
            &[
                "auth=none",
                "tls.enabled=true",
                "tls.existingSecret=x",
                "tls.clientCA.secret=ca",
            ],
            "auth=none",
        ),
    ];
    refused(&cases);
    let objects = render(
        "sg-render",
        &[
            "auth=clientcert",
            "tls.enabled=true",
            "tls.existingSecret=x",
            "tls.clientCA.secret=ca",
        ],
    );
    let env = rendered_env(&objects, "sg-render");
    assert_eq!(env["GATEWAY_AUTH"], "clientcert", "{env:?}");
    assert!(env.contains_key("GATEWAY_TLS_CLIENT_CA_FILE"), "{env:?}");
}

/// sar asks the API server whether `user` may `create` `resource` of `group` in `ns`.
async fn sar(admin: &kube::Client, user: &str, ns: &str, group: &str, resource: &str) -> bool {
    sar_of(admin, (user, &[]), ns, (group, resource, "create")).await
}

/// sar_of asks whether `who` (a user and its groups) may do `what` (group, resource,
/// verb) in `ns` (cluster-wide when empty).
async fn sar_of(
    admin: &kube::Client,
    who: (&str, &[&str]),
    ns: &str,
    what: (&str, &str, &str),
) -> bool {
    use k8s_openapi::api::authorization::v1::{
        ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
    };
    let (group, resource, verb) = what;
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(who.0.to_owned()),
            groups: Some(who.1.iter().map(|g| (*g).to_owned()).collect()),
            resource_attributes: Some(ResourceAttributes {
                namespace: (!ns.is_empty()).then(|| ns.to_owned()),
                group: Some(group.to_owned()),
                resource: Some(resource.to_owned()),
                verb: Some(verb.to_owned()),
                ..ResourceAttributes::default()
            }),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    };
    Api::<SubjectAccessReview>::all(admin.clone())
        .create(&PostParams::default(), &review)
        .await
        .expect("reviewing access")
        .status
        .is_some_and(|s| s.allowed)
}

/// A Lambda function in front of EKS (docs/lambda.md) does not run as the chart's
/// ServiceAccount: its role is mapped to a group, which `rbac.extraSubjects` binds to
/// every right of the gateway's, with no Deployment installed.
#[tokio::test]
async fn extra_subjects_get_the_gateways_rights_without_a_deployment() {
    let cp = testenv::shared();
    let ns = cp.new_namespace().await.expect("a test namespace");
    let objects = render(
        ns.name(),
        &[
            "deployment.enabled=false",
            "rbac.extraSubjects[0].kind=Group",
            "rbac.extraSubjects[0].apiGroup=rbac.authorization.k8s.io",
            "rbac.extraSubjects[0].name=signal-gateway-lambda",
        ],
    );
    assert!(
        !objects
            .iter()
            .any(|o| o.types.as_ref().is_some_and(|t| t.kind == "Deployment")),
        "{:?}",
        summary(&objects)
    );
    let admin = cp.admin_client();
    apply(&admin, &objects).await;
    // The user name is what an access entry gives an assumed role; only the group grants.
    let role = "arn:aws:sts::111122223333:assumed-role/signal-gateway/fn";
    let lambda: &[&str] = &["signal-gateway-lambda", "system:authenticated"];
    let rights = [
        (ns.name(), ("kubernaut.ai", "remediationrequests", "create")),
        (ns.name(), ("coordination.k8s.io", "leases", "patch")),
        (ns.name(), ("coordination.k8s.io", "leases", "delete")),
        ("", ("authentication.k8s.io", "tokenreviews", "create")),
        (
            "",
            ("authorization.k8s.io", "subjectaccessreviews", "create"),
        ),
        ("", ("", "pods", "get")),
    ];
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    for (where_, what) in rights {
        // RBAC reaches the authorizer through its informers: wait for the grant.
        while !sar_of(&admin, (role, lambda), where_, what).await {
            assert!(
                std::time::Instant::now() < deadline,
                "the group may not {what:?} in {where_:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            !sar_of(&admin, (role, &["system:authenticated"]), where_, what).await,
            "without the group: {what:?}"
        );
    }
}

#[tokio::test]
async fn a_sender_may_send_and_may_not_create_remediation_requests() {
    let cp = testenv::shared();
    let ns = cp.new_namespace().await.expect("a test namespace");
    let sender_ns = format!("senders.serviceAccounts[0].namespace={}", ns.name());
    let env = install(
        cp,
        ns.name(),
        &["senders.serviceAccounts[0].name=alertmanager", &sender_ns],
    )
    .await;
    let admin = cp.admin_client();
    Api::<ServiceAccount>::namespaced(admin.clone(), ns.name())
        .create(
            &PostParams::default(),
            &ServiceAccount {
                metadata: ObjectMeta {
                    name: Some("alertmanager".to_owned()),
                    ..ObjectMeta::default()
                },
                ..ServiceAccount::default()
            },
        )
        .await
        .expect("the sender's ServiceAccount");
    // What the gateway asks (GATEWAY_AUTH_RESOURCE) is what the Role grants.
    let (resource, group) = env["GATEWAY_AUTH_RESOURCE"]
        .split_once('.')
        .expect("resource.group");
    assert_eq!(
        (resource, group),
        ("signals", "signal-gateway.kubernaut.ai")
    );
    let (sender, _) = service_account_client(cp, ns.name(), "alertmanager").await;
    wait_allowed(&sender, ns.name(), group, resource, "create").await;
    let user = format!("system:serviceaccount:{}:alertmanager", ns.name());
    assert!(sar(&admin, &user, ns.name(), group, resource).await);
    assert!(
        !sar(
            &admin,
            &user,
            ns.name(),
            "kubernaut.ai",
            "remediationrequests"
        )
        .await,
        "a sender may not create RemediationRequests"
    );
    // The API server itself refuses the sender's RR.
    let gvk = GroupVersionKind::gvk("kubernaut.ai", "v1alpha1", "RemediationRequest");
    let ar = kube::api::ApiResource::from_gvk_with_plural(&gvk, "remediationrequests");
    let rr = DynamicObject::new("rr-sender", &ar);
    forbidden(
        Api::<DynamicObject>::namespaced_with(sender, ns.name(), &ar)
            .create(&PostParams::default(), &rr)
            .await,
        "creating an RR as a sender",
    );
    // The gateway's own account may (the grant is live, not absent).
    assert!(
        sar(
            &admin,
            &format!("system:serviceaccount:{}:{RELEASE}", ns.name()),
            ns.name(),
            "kubernaut.ai",
            "remediationrequests"
        )
        .await
    );
}

#[tokio::test]
async fn the_openshift_values_omit_the_uid_and_still_pass_pod_security_restricted() {
    let cp = testenv::shared();
    let ns = cp.new_namespace().await.expect("a test namespace");
    let admin = cp.admin_client();
    restricted(&admin, ns.name()).await;
    let objects = render_files(
        RELEASE,
        ns.name(),
        &["chart/examples/values-openshift.yaml"],
        &[],
    );
    check_common(&objects, ns.name());
    let pod_sc = template_spec(&objects, ns.name())["spec"]["securityContext"].clone();
    assert!(
        pod_sc["runAsUser"].is_null() && pod_sc["runAsGroup"].is_null(),
        "{pod_sc}"
    );
    assert_eq!(pod_sc["runAsNonRoot"], true, "{pod_sc}");
    let container = gateway_container(&objects, ns.name());
    assert!(container["securityContext"]["runAsUser"].is_null());
    apply(&admin, &objects).await;
    let deployment = Api::<Deployment>::namespaced(admin.clone(), ns.name())
        .get(RELEASE)
        .await
        .expect("the applied Deployment");
    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    Api::<Pod>::namespaced(admin, ns.name())
        .create(&dry, &pod_from_template(&deployment, "sg-openshift"))
        .await
        .unwrap_or_else(|e| panic!("the OpenShift pod is refused under restricted: {e}"));
}

#[tokio::test]
async fn autoscaling_renders_an_hpa_and_leaves_the_replicas_to_it() {
    let cp = testenv::shared();
    let ns = cp.new_namespace().await.expect("a test namespace");
    let objects = render_files(
        RELEASE,
        ns.name(),
        &["chart/examples/values-autoscaling.yaml"],
        &[],
    );
    check_common(&objects, ns.name());
    let deployment = find(&objects, "Deployment", Some(ns.name()), RELEASE);
    assert!(
        deployment.data["spec"]["replicas"].is_null(),
        "an upgrade must not reset the HPA's count"
    );
    let hpa = find(
        &objects,
        "HorizontalPodAutoscaler",
        Some(ns.name()),
        RELEASE,
    );
    let spec = &hpa.data["spec"];
    assert_eq!(
        spec["scaleTargetRef"],
        serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": RELEASE})
    );
    assert_eq!(
        (spec["minReplicas"].clone(), spec["maxReplicas"].clone()),
        (2.into(), 8.into())
    );
    assert_eq!(
        spec["metrics"],
        serde_json::json!([{"type": "Resource", "resource": {"name": "cpu",
            "target": {"type": "Utilization", "averageUtilization": 70}}}])
    );
    // The API server takes it as rendered.
    apply(&cp.admin_client(), &objects).await;

    let objects = render_files(
        RELEASE,
        "sg-render",
        &["chart/examples/values-autoscaling.yaml"],
        &[
            "autoscaling.requestsPerSecond.metricName=gateway_http_requests_per_second",
            "autoscaling.requestsPerSecond.averageValue=50",
        ],
    );
    let hpa = find(
        &objects,
        "HorizontalPodAutoscaler",
        Some("sg-render"),
        RELEASE,
    );
    assert_eq!(
        hpa.data["spec"]["metrics"][1],
        serde_json::json!({"type": "Pods", "pods": {"metric": {"name": "gateway_http_requests_per_second"},
            "target": {"type": "AverageValue", "averageValue": "50"}}})
    );
    let cases: [(&[&str], &str); 2] = [
        (
            &[
                "autoscaling.enabled=true",
                "autoscaling.minReplicas=5",
                "autoscaling.maxReplicas=4",
            ],
            "autoscaling.minReplicas",
        ),
        (&["autoscaling.maxReplica=4"], "maxReplica"),
    ];
    refused(&cases);
}

#[tokio::test]
async fn network_policy_helm_test_and_pod_extras_apply_under_restricted() {
    let cp = testenv::shared();
    let ns = cp.new_namespace().await.expect("a test namespace");
    let admin = cp.admin_client();
    restricted(&admin, ns.name()).await;
    let objects = render(
        ns.name(),
        &[
            "networkPolicy.enabled=true",
            "networkPolicy.senders[0].namespaceSelector.matchLabels.kubernetes\\.io/metadata\\.name=monitoring",
            "networkPolicy.senders[0].podSelector.matchLabels.app=alertmanager",
            "helmTest.enabled=true",
            "helmTest.image=registry.example.com/curl:8",
            "envFrom[0].configMapRef.name=sg-env",
            "extraVolumes[0].name=otel-ca",
            "extraVolumes[0].configMap.name=otel-ca",
            "extraVolumeMounts[0].name=otel-ca",
            "extraVolumeMounts[0].mountPath=/etc/otel-ca",
        ],
    );
    check_common(&objects, ns.name());
    assert_the_network_policy_admits_senders_and_monitoring(&objects, ns.name());
    assert_the_helm_test_pods_check_the_senders_role(&objects, ns.name());
    assert_the_pod_extras_reach_the_container(&objects, ns.name());
    // Everything applies; the test pods (created, never run here) pass "restricted".
    apply(&admin, &objects).await;
    let stored = Api::<Pod>::namespaced(admin, ns.name())
        .get(&format!("{RELEASE}-test-sender"))
        .await
        .expect("the test pod was admitted");
    assert_eq!(
        stored.spec.and_then(|s| s.service_account_name).as_deref(),
        Some(format!("{RELEASE}-test-sender").as_str())
    );
    refused(&[(&["helmTest.enabled=true"][..], "/helmTest/image")]);
}

/// assert_the_network_policy_admits_senders_and_monitoring checks the NetworkPolicy: the API
/// port from the senders (and this release's test pods), metrics from monitoring.
fn assert_the_network_policy_admits_senders_and_monitoring(objects: &[DynamicObject], ns: &str) {
    let selector = serde_json::json!({
        "app.kubernetes.io/name": "signal-gateway",
        "app.kubernetes.io/instance": RELEASE,
    });

    let policy = find(objects, "NetworkPolicy", Some(ns), RELEASE);
    let spec = &policy.data["spec"];
    assert_eq!(spec["podSelector"]["matchLabels"], selector);
    assert_eq!(spec["policyTypes"], serde_json::json!(["Ingress"]));
    assert_eq!(
        spec["ingress"],
        serde_json::json!([
            {"ports": [{"port": "http", "protocol": "TCP"}], "from": [
                {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
                 "podSelector": {"matchLabels": {"app": "alertmanager"}}},
                {"podSelector": {"matchLabels": {"app.kubernetes.io/instance": RELEASE,
                    "app.kubernetes.io/component": "test"}}}]},
            {"ports": [{"port": "metrics", "protocol": "TCP"}], "from": [
                {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]}
        ])
    );
}

/// assert_the_helm_test_pods_check_the_senders_role checks `helm test`: a sender expecting
/// 200 "ignored", an account without the role 403.
fn assert_the_helm_test_pods_check_the_senders_role(objects: &[DynamicObject], ns: &str) {
    for (who, want) in [("sender", "200"), ("nobody", "403")] {
        let name = format!("{RELEASE}-test-{who}");
        let pod = find(objects, "Pod", Some(ns), &name);
        let annotations = pod.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(
            annotations.get("helm.sh/hook").map(String::as_str),
            Some("test")
        );
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        assert!(
            !labels.contains_key("app.kubernetes.io/name"),
            "the Service must not select a test pod: {labels:?}"
        );
        let spec = &pod.data["spec"];
        assert_eq!(spec["serviceAccountName"], name.as_str());
        let container = &spec["containers"][0];
        assert_eq!(container["image"], "registry.example.com/curl:8");
        let env: BTreeMap<_, _> = container["env"]
            .as_array()
            .expect("env")
            .iter()
            .map(|e| {
                (
                    e["name"].as_str().unwrap_or(""),
                    e["value"].as_str().unwrap_or(""),
                )
            })
            .collect();
        assert_eq!(env["WANT"], want);
        assert_eq!(
            env["URL"],
            format!(
                "http://{RELEASE}.{}.svc:8080/api/v1/signals/kubernetes-event",
                ns
            )
        );
        assert_eq!(
            spec["volumes"][0]["projected"]["sources"][0]["serviceAccountToken"]["audience"],
            "signal-gateway"
        );
        find(objects, "ServiceAccount", Some(ns), &name);
    }
    let test_role = rules_of(find(
        objects,
        "Role",
        Some(ns),
        &format!("{RELEASE}-test-sender"),
    ));
    assert_eq!(
        grants(&test_role),
        BTreeSet::from([(
            "signal-gateway.kubernaut.ai".to_owned(),
            "signals".to_owned(),
            "create".to_owned()
        )])
    );
}

/// assert_the_pod_extras_reach_the_container checks `envFrom` and the extra volume mount.
fn assert_the_pod_extras_reach_the_container(objects: &[DynamicObject], ns: &str) {
    let container = gateway_container(objects, ns);
    assert_eq!(
        container["envFrom"],
        serde_json::json!([{"configMapRef": {"name": "sg-env"}}])
    );
    assert!(
        container["volumeMounts"]
            .as_array()
            .is_some_and(|m| m.iter().any(|m| m["mountPath"] == "/etc/otel-ca")),
        "{container}"
    );
}

#[test]
fn name_overrides_rename_every_object_of_the_release() {
    let objects = render("sg-render", &["fullnameOverride=gw"]);
    for (kind_, ns, name) in [
        ("Deployment", Some("sg-render"), "gw"),
        ("Service", Some("sg-render"), "gw"),
        ("ServiceAccount", Some("sg-render"), "gw"),
        ("Role", Some("sg-render"), "gw"),
        ("PodDisruptionBudget", Some("sg-render"), "gw"),
        ("ClusterRole", None, "sg-render-gw"),
        ("ClusterRole", None, "sg-render-gw-reads"),
    ] {
        find(&objects, kind_, ns, name);
    }
    let env = gateway_env(
        &serde_json::to_value(find(&objects, "Deployment", Some("sg-render"), "gw")).expect("JSON"),
    );
    assert_eq!(env["GATEWAY_LOCK_NAMESPACE"], "sg-render");
    let objects = render("sg-render", &["nameOverride=alerts"]);
    let deployment = find(&objects, "Deployment", Some("sg-render"), "sg-alerts");
    assert_eq!(
        deployment.data["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"],
        "alerts"
    );
    refused(&[(&["fullnameOverride=Not_A_Name"][..], "/fullnameOverride")]);
}

#[test]
fn the_readiness_probe_waits_longer_than_the_api_timeout() {
    let container = gateway_container(&render("sg-render", &[]), "sg-render");
    let readiness = &container["readinessProbe"];
    assert!(
        readiness["timeoutSeconds"]
            .as_i64()
            .is_some_and(|t| t * 1000 > 5000),
        "/readyz waits up to GATEWAY_API_TIMEOUT_MS: {readiness}"
    );
    assert!(container["startupProbe"].is_null());
    let cases: [(&[&str], &str); 2] = [
        (
            &["probes.readiness.timeoutSeconds=5"],
            "probes.readiness.timeoutSeconds",
        ),
        (&["apiTimeoutMs=6500"], "probes.readiness.timeoutSeconds"),
    ];
    refused(&cases);
    let objects = render(
        "sg-render",
        &[
            "apiTimeoutMs=2000",
            "probes.readiness.timeoutSeconds=3",
            "probes.liveness.periodSeconds=20",
            "probes.startup.enabled=true",
        ],
    );
    let container = gateway_container(&objects, "sg-render");
    assert_eq!(container["readinessProbe"]["timeoutSeconds"], 3);
    assert_eq!(container["livenessProbe"]["periodSeconds"], 20);
    assert_eq!(container["startupProbe"]["httpGet"]["path"], "/healthz");
}

#[tokio::test]
async fn the_gateway_listening_on_any_ipv6_address_serves_ipv4_too() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let cp = testenv::shared();
    let ns = cp.new_namespace().await.expect("a test namespace");
    let gw = crate::support::spawn(cp, ns.name(), "dual", &[("GATEWAY_LISTEN_ADDR", "[::]:0")]);
    let port = gw.addr().port();
    assert!(gw.addr().is_ipv6(), "{}", gw.addr());
    for to in [
        std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port)),
    ] {
        let mut conn = tokio::net::TcpStream::connect(to)
            .await
            .unwrap_or_else(|e| panic!("connecting to {to}: {e}"));
        conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n\r\n")
            .await
            .expect("writing the request");
        let mut answer = String::new();
        conn.read_to_string(&mut answer)
            .await
            .expect("reading the answer");
        assert!(answer.starts_with("HTTP/1.1 200"), "{to}: {answer}");
    }
}

#[test]
fn dashboard_and_rules_are_per_cluster_namespace_and_job() {
    let root = testenv::repo_root();
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("chart/dashboards/signal-gateway.json"))
            .expect("the dashboard"),
    )
    .expect("the dashboard is JSON");
    let variables: Vec<_> = dashboard["templating"]["list"]
        .as_array()
        .expect("template variables")
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    for v in ["cluster", "namespace", "job"] {
        assert!(variables.contains(&v), "{variables:?}");
    }
    let matcher = r#"{cluster=~"$cluster", namespace=~"$namespace", job=~"$job""#;
    let mut queries = 0;
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("an expression");
            for (at, _) in expr.match_indices(['g', 'p']) {
                let rest = &expr[at..];
                let before = expr[..at].chars().last();
                if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                    || !(rest.starts_with("gateway_") || rest.starts_with("process_"))
                {
                    continue;
                }
                let name_end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                assert!(
                    rest[name_end..].starts_with(matcher),
                    "{} in {expr:?} is not filtered by the variables",
                    &rest[..name_end]
                );
                queries += 1;
            }
        }
    }
    assert!(queries > 30, "{queries} selectors");
    // Every aggregation of the rules keeps the release apart.
    let rules =
        std::fs::read_to_string(root.join("chart/files/gateway.rules.yaml")).expect("rules");
    assert!(
        !rules.contains("sum(") && !rules.contains("sum by (le)"),
        "an aggregation over every release"
    );
    let per_release = rules.matches("by (cluster, namespace, job").count();
    assert_eq!(per_release, rules.matches(" by (").count(), "{rules}");
    assert!(per_release >= 15, "{per_release}");
}

/// RUNBOOK is the default base of the alerts' runbook_url (metrics.prometheusRule.runbookUrl).
const RUNBOOK: &str = "https://github.com/kubernaut/signal-gateway/blob/main/docs/operations.md";

#[test]
fn every_alert_links_a_runbook_section_that_exists() {
    let root = testenv::repo_root();
    let runbook =
        std::fs::read_to_string(root.join("docs/operations.md")).expect("docs/operations.md");
    let rules: serde_yaml_ng::Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(root.join("chart/files/gateway.rules.yaml")).expect("rules"),
    )
    .expect("rules are YAML");
    let mut alerts = 0;
    for group in rules["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            let name = rule["alert"].as_str().expect("an alert");
            assert_eq!(
                rule["annotations"]["runbook_url"].as_str(),
                Some(format!("{RUNBOOK}#{}", name.to_lowercase()).as_str()),
                "{name}"
            );
            assert!(
                runbook.lines().any(|l| l == format!("## {name}")),
                "docs/operations.md has no section {name}"
            );
            alerts += 1;
        }
    }
    assert_eq!(alerts, 13);

    // The PrometheusRule links where the operator publishes the runbook; the
    // ServiceMonitor gives the job the rules select.
    let objects = render(
        "sg-render",
        &[
            "metrics.prometheusRule.enabled=true",
            "metrics.prometheusRule.runbookUrl=https://docs.example.com/runbook",
            "metrics.serviceMonitor.enabled=true",
        ],
    );
    let rule = find(&objects, "PrometheusRule", Some("sg-render"), RELEASE);
    let text = serde_json::to_string(&rule.data).expect("JSON");
    assert!(!text.contains(RUNBOOK), "{text}");
    assert_eq!(
        text.matches("https://docs.example.com/runbook#signalgateway")
            .count(),
        alerts
    );
    let monitor = find(&objects, "ServiceMonitor", Some("sg-render"), RELEASE);
    assert_eq!(monitor.data["spec"]["jobLabel"], "app.kubernetes.io/name");
    let service = find(&objects, "Service", Some("sg-render"), RELEASE);
    assert_eq!(
        service
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("app.kubernetes.io/name"))
            .map(String::as_str),
        Some("signal-gateway"),
        "job=\"signal-gateway\", as the rules select"
    );
}

#[test]
fn service_ip_families_are_left_to_the_cluster_unless_set() {
    let service = |sets: &[&str]| {
        find(
            &render("sg-render", sets),
            "Service",
            Some("sg-render"),
            RELEASE,
        )
        .data["spec"]
            .clone()
    };
    let default = service(&[]);
    assert!(
        default["ipFamilyPolicy"].is_null() && default["ipFamilies"].is_null(),
        "{default}"
    );
    let dual = service(&[
        "service.ipFamilyPolicy=PreferDualStack",
        "service.ipFamilies={IPv6,IPv4}",
    ]);
    assert_eq!(dual["ipFamilyPolicy"], "PreferDualStack");
    assert_eq!(dual["ipFamilies"], serde_json::json!(["IPv6", "IPv4"]));
    refused(&[(
        &["service.ipFamilyPolicy=Both"][..],
        "/service/ipFamilyPolicy",
    )]);
    // Without a Deployment (Knative) there is nothing to serve TLS for.
    let objects = render_files(
        RELEASE,
        "sg-render",
        &["chart/examples/values-tls-cert-manager.yaml"],
        &["deployment.enabled=false"],
    );
    assert!(!objects.iter().any(|o| kind(o) == "Certificate"));
}
