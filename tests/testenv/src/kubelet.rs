//! Kubelet emulates the node side of one namespace, so that a test can run the chart's pod
//! from the unpacked container image against a control plane that has no nodes: the
//! ReplicaSet controller creating Pods from a Deployment's template, the kubelet starting
//! and stopping their containers, and a Service routing to the ready ones. A control plane
//! of etcd and kube-apiserver alone runs no pod, and the rendered pod template is what the
//! chart ships: this runs it as written.
//!
//! - Pods are created on the API server from the stored Deployment's template, so that
//!   admission adds what it adds (the ServiceAccount token volume).
//! - [`Kubelet::run`] starts the image's entrypoint with the container's `command`/`args`,
//!   the image's env then the container's, with `fieldRef`, `secretKeyRef` and
//!   `configMapKeyRef` resolved against the Pod; every volume mount is materialized in a
//!   temporary directory (projected ServiceAccount tokens from the TokenRequest API for the
//!   Pod's account, audience and expiry as the volume asks, bound to the Pod; Secrets,
//!   ConfigMaps and downward API files), and values naming a mount path are pointed at
//!   that directory. Readiness is the template's own readiness probe, polled (bounded).
//! - Three things cannot be as in a pod without a kubelet, and are the only departures:
//!   the pod's network namespace is a loopback port per container port (a listen address
//!   on a container port becomes `127.0.0.1:<port>`, and the probe uses it); the in-cluster
//!   configuration, which the client reads at the fixed path
//!   `/var/run/secrets/kubernetes.io/serviceaccount`, is a kubeconfig naming the same
//!   mounted token and CA files; the process runs as this test's user.
//! - [`Kubelet::terminate`] ends a pod as the kubelet does: deletion, the `preStop` sleep
//!   while [`Endpoints`] still route to it, out of rotation, SIGTERM, an exit 0 within
//!   `terminationGracePeriodSeconds`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, EnvVar, KeyToPath, Pod, Secret, ServiceAccount, Volume, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::{Value, json};

use crate::{ControlPlane, spawn_tied};

/// WAIT bounds every wait for a pod.
const WAIT: Duration = Duration::from_secs(60);
/// POLL is the interval of bounded polling.
const POLL: Duration = Duration::from_millis(50);
/// SERVICE_ACCOUNT_DIR is where a pod's client reads its in-cluster configuration.
const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Image is a container image's config and name, and its layers unpacked into `root`.
pub struct Image {
    /// config is the image config's `config` (User, Env, Entrypoint, ...).
    pub config: Value,
    pub ref_name: String,
    pub root: PathBuf,
}

impl Image {
    /// command is the entrypoint's path inside the unpacked root, then the rest of the
    /// entrypoint and the default command.
    ///
    /// # Panics
    ///
    /// When the image has no entrypoint.
    #[must_use]
    pub fn command(&self) -> (PathBuf, Vec<String>) {
        let mut argv: Vec<String> = strings(&self.config["Entrypoint"]);
        argv.extend(strings(&self.config["Cmd"]));
        assert!(!argv.is_empty(), "the image has no entrypoint");
        let exe = self.root.join(argv.remove(0).trim_start_matches('/'));
        (exe, argv)
    }

    /// env is the image config's environment.
    ///
    /// # Panics
    ///
    /// When an entry is not `KEY=VALUE`.
    #[must_use]
    pub fn env(&self) -> BTreeMap<String, String> {
        strings(&self.config["Env"])
            .into_iter()
            .map(|kv| {
                let (k, v) = kv.split_once('=').expect("Env entries are KEY=VALUE");
                (k.to_owned(), v.to_owned())
            })
            .collect()
    }

    /// workdir is the config's working directory inside the unpacked root.
    #[must_use]
    pub fn workdir(&self) -> PathBuf {
        let dir = self.config["WorkingDir"].as_str().unwrap_or("/");
        self.root.join(dir.trim_start_matches('/'))
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .map(|s| s.as_str().expect("a string").to_owned())
        .collect()
}

/// pod_from_template is a Pod made from the stored Deployment's template, as the
/// ReplicaSet controller makes it.
#[must_use]
pub fn pod_from_template(deployment: &Deployment, name: &str) -> Pod {
    let template = deployment.spec.template.clone();
    let mut metadata = template.metadata.unwrap_or_default();
    metadata.name = Some(name.to_owned());
    Pod {
        metadata,
        spec: template.spec,
        status: None,
    }
}

/// get_status is the status of a GET of `path` on `addr`, 0 when there is no answer.
///
/// # Panics
///
/// When `path` makes no valid URI.
pub async fn get_status(addr: SocketAddr, path: &str) -> u16 {
    let req = http::Request::get(format!("http://{addr}{path}"))
        .body(Full::new(bytes::Bytes::new()))
        .expect("a request");
    Client::builder(TokioExecutor::new())
        .build_http()
        .request(req)
        .await
        .map_or(0, |r| r.status().as_u16())
}

/// token asks the TokenRequest API for a token of ServiceAccount `account`, for `audience`
/// (the API server's when None), bound to `pod` if given.
///
/// # Panics
///
/// When the API server gives no token.
pub async fn token(
    cp: &ControlPlane,
    ns: &str,
    account: &str,
    audience: Option<&str>,
    expiration_seconds: Option<i64>,
    pod: Option<&Pod>,
) -> String {
    let request = TokenRequest {
        metadata: ObjectMeta::default(),
        spec: Some(TokenRequestSpec {
            audiences: audience.map(|a| vec![a.to_owned()]),
            expiration_seconds,
            bound_object_ref: pod.map(|p| BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: p.metadata.name.clone(),
                uid: p.metadata.uid.clone(),
            }),
            ..TokenRequestSpec::default()
        }),
        status: None,
    };
    Api::<ServiceAccount>::namespaced(cp.admin_client(), ns)
        .create_token_request(account, &PostParams::default(), &request)
        .await
        .unwrap_or_else(|e| panic!("a token for ServiceAccount {account}: {e}"))
        .status
        .and_then(|s| s.token)
        .filter(|t| !t.is_empty())
        .expect("the TokenRequest returned a token")
}

/// field resolves a downward API `fieldPath` against the Pod.
fn field(pod: &Pod, path: &str) -> String {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref().expect("a pod spec");
    match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "spec.serviceAccountName" => spec.service_account_name.clone().unwrap_or_default(),
        "spec.nodeName" => spec.node_name.clone().unwrap_or_default(),
        "status.podIP" | "status.hostIP" => "127.0.0.1".into(),
        other => {
            let label = other
                .strip_prefix("metadata.labels['")
                .and_then(|l| l.strip_suffix("']"));
            match label {
                Some(key) => meta
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(key))
                    .cloned()
                    .unwrap_or_default(),
                None => panic!("the template asks for field {other}, which this kubelet lacks"),
            }
        }
    }
}

async fn secret_data(cp: &ControlPlane, ns: &str, name: &str) -> BTreeMap<String, Vec<u8>> {
    Api::<Secret>::namespaced(cp.admin_client(), ns)
        .get(name)
        .await
        .unwrap_or_else(|e| panic!("Secret {name}: {e}"))
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect()
}

async fn config_map_data(cp: &ControlPlane, ns: &str, name: &str) -> BTreeMap<String, Vec<u8>> {
    Api::<ConfigMap>::namespaced(cp.admin_client(), ns)
        .get(name)
        .await
        .unwrap_or_else(|e| panic!("ConfigMap {name}: {e}"))
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.into_bytes()))
        .collect()
}

/// write_keys writes `data` into `dir`: every key, or only `items` (key to path).
fn write_keys(
    dir: &Path,
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<KeyToPath>>,
    what: &str,
) {
    let items: Vec<(String, String)> = match items {
        Some(items) => items
            .iter()
            .map(|k| (k.key.clone(), k.path.clone()))
            .collect(),
        None => data.keys().map(|k| (k.clone(), k.clone())).collect(),
    };
    for (key, path) in items {
        let bytes = data
            .get(&key)
            .unwrap_or_else(|| panic!("{what} has no key {key}"));
        let file = dir.join(path);
        std::fs::create_dir_all(file.parent().expect("a parent")).expect("a mount dir");
        std::fs::write(&file, bytes).expect("writing a mounted file");
    }
}

/// mount_secret writes Secret `name` (its `items`, or every key) into `dir`.
async fn mount_secret(
    cp: &ControlPlane,
    ns: &str,
    name: &str,
    items: Option<&Vec<KeyToPath>>,
    dir: &Path,
) {
    let data = secret_data(cp, ns, name).await;
    write_keys(dir, &data, items, &format!("Secret {name}"));
}

/// mount_config_map writes ConfigMap `name` (its `items`, or every key) into `dir`.
async fn mount_config_map(
    cp: &ControlPlane,
    ns: &str,
    name: &str,
    items: Option<&Vec<KeyToPath>>,
    dir: &Path,
) {
    let data = config_map_data(cp, ns, name).await;
    write_keys(dir, &data, items, &format!("ConfigMap {name}"));
}

/// materialize writes the files of `volume` into `dir`, as the kubelet mounts them.
async fn materialize(cp: &ControlPlane, pod: &Pod, volume: &Volume, dir: &Path) {
    let ns = pod.metadata.namespace.as_deref().expect("a namespace");
    let account = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".into());
    std::fs::create_dir_all(dir).expect("a mount dir");
    if let Some(secret) = &volume.secret {
        let name = secret.secret_name.as_deref().expect("a secret name");
        mount_secret(cp, ns, name, secret.items.as_ref(), dir).await;
    } else if let Some(cm) = &volume.config_map {
        mount_config_map(cp, ns, &cm.name, cm.items.as_ref(), dir).await;
    } else if volume.empty_dir.is_some() {
    } else if let Some(projected) = &volume.projected {
        for source in projected.sources.iter().flatten() {
            project(cp, pod, ns, &account, source, dir).await;
        }
    } else {
        panic!(
            "volume {} is of a type this kubelet lacks: {volume:?}",
            volume.name
        );
    }
}

/// project writes one source of a projected volume.
async fn project(
    cp: &ControlPlane,
    pod: &Pod,
    ns: &str,
    account: &str,
    source: &VolumeProjection,
    dir: &Path,
) {
    if let Some(sat) = &source.service_account_token {
        let token = token(
            cp,
            ns,
            account,
            sat.audience.as_deref(),
            sat.expiration_seconds,
            Some(pod),
        )
        .await;
        std::fs::write(dir.join(&sat.path), token).expect("writing the projected token");
    } else if let Some(cm) = &source.config_map {
        mount_config_map(cp, ns, &cm.name, cm.items.as_ref(), dir).await;
    } else if let Some(secret) = &source.secret {
        mount_secret(cp, ns, &secret.name, secret.items.as_ref(), dir).await;
    } else if let Some(downward) = &source.downward_api {
        for item in downward.items.iter().flatten() {
            let fr = item.field_ref.as_ref().expect("a fieldRef");
            std::fs::write(dir.join(&item.path), field(pod, &fr.field_path))
                .expect("writing a downward API file");
        }
    } else {
        panic!("a projected source this kubelet lacks: {source:?}");
    }
}

/// Replica is one pod's container process; it is killed when dropped.
pub struct Replica {
    /// pod is the Pod's name.
    pub pod: String,
    child: Child,
    /// addr is where the pod's `http` port listens.
    pub addr: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
    _mounts: tempfile::TempDir,
}

impl Replica {
    /// log is what the container wrote to stderr so far.
    #[must_use]
    pub fn log(&self) -> String {
        self.logs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .join("\n")
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// container is the pod's only container.
fn container(pod: &Pod) -> &Container {
    let containers = &pod.spec.as_ref().expect("a pod spec").containers;
    assert_eq!(containers.len(), 1, "the template has one container");
    &containers[0]
}

/// container_port resolves a probe's port (a number or a port name).
fn container_port(c: &Container, port: &IntOrString) -> i32 {
    match port {
        IntOrString::Int(p) => *p,
        IntOrString::String(name) => {
            c.ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .unwrap_or_else(|| panic!("no container port named {name}"))
                .container_port
        }
    }
}

/// Mounts are a pod's volume mounts as directories: (mount path, directory), the longest
/// mount path first, so that nested mounts win.
struct Mounts(Vec<(String, PathBuf)>);

impl Mounts {
    /// local points a value that names a path under a mount at the mount's directory.
    fn local(&self, value: &str) -> String {
        for (path, dir) in &self.0 {
            if let Some(rest) = value.strip_prefix(path.as_str())
                && (rest.is_empty() || rest.starts_with('/'))
            {
                return format!("{}{rest}", dir.display());
            }
        }
        value.to_owned()
    }

    /// dir is the directory mounted at `path`.
    fn dir(&self, path: &str) -> Option<&Path> {
        self.0
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, dir)| dir.as_path())
    }
}

/// Ports are the pod's network namespace: a loopback port for every container port.
struct Ports(BTreeMap<i32, u16>);

impl Ports {
    fn of(c: &Container) -> Ports {
        Ports(
            c.ports
                .iter()
                .flatten()
                .map(|p| {
                    let port = crate::free_port().expect("a free port");
                    (p.container_port, port)
                })
                .collect(),
        )
    }

    /// addr is the loopback address of container port `port`.
    fn addr(&self, port: i32) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.0[&port]))
    }

    /// localize turns a listen address on a container port, on any address of the pod
    /// (IPv4 or dual-stack, the chart's `[::]`), into its loopback address.
    fn localize(&self, value: &mut String) {
        for (container_port, port) in &self.0 {
            if *value == format!("0.0.0.0:{container_port}")
                || *value == format!("[::]:{container_port}")
            {
                *value = format!("127.0.0.1:{port}");
            }
        }
    }
}

/// Kubelet runs pods of one namespace from the unpacked image.
pub struct Kubelet<'a> {
    pub cp: &'a ControlPlane,
    pub ns: String,
    pub image: &'a Image,
}

impl Kubelet<'_> {
    /// create_pod creates Pod `name` from the Deployment's template, as the
    /// ReplicaSet controller does, and returns it as admission left it.
    ///
    /// # Panics
    ///
    /// When the API server refuses the Pod.
    pub async fn create_pod(&self, deployment: &Deployment, name: &str) -> Pod {
        Api::<Pod>::namespaced(self.cp.admin_client(), &self.ns)
            .create(&PostParams::default(), &pod_from_template(deployment, name))
            .await
            .unwrap_or_else(|e| panic!("creating Pod {name}: {e}"))
    }

    /// run starts the pod's container and returns once its readiness probe passes.
    ///
    /// # Panics
    ///
    /// When the pod asks for what this kubelet lacks, or its container exits or is not
    /// ready in time.
    pub async fn run(&self, pod: &Pod) -> Replica {
        let name = pod.metadata.name.clone().expect("a pod name");
        let c = container(pod);
        let dir = tempfile::tempdir().expect("a mounts dir");
        let mounts = self.mount(pod, c, dir.path()).await;
        let ports = Ports::of(c);
        let http_port = c
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some("http"))
            .expect("a port named http")
            .container_port;
        let addr = ports.addr(http_port);
        let mut env = self.env(pod, c, &mounts, &ports).await;
        assert_eq!(
            env.get("GATEWAY_LISTEN_ADDR").map(String::as_str),
            Some(addr.to_string().as_str()),
            "the template listens on its http port"
        );
        let kubeconfig = self.in_cluster_kubeconfig(&mounts, dir.path());
        env.insert("KUBECONFIG".into(), kubeconfig.display().to_string());
        let (child, logs) = self.start(c, &mounts, &env);
        let mut replica = Replica {
            pod: name,
            child,
            addr,
            logs,
            _mounts: dir,
        };
        wait_ready(&mut replica, c, &ports).await;
        replica
    }

    /// mount materializes the container's volume mounts under `dir`.
    async fn mount(&self, pod: &Pod, c: &Container, dir: &Path) -> Mounts {
        let spec = pod.spec.as_ref().expect("a pod spec");
        let mut mounted: Vec<(String, PathBuf)> = Vec::new();
        for vm in c.volume_mounts.iter().flatten() {
            let volume = spec
                .volumes
                .iter()
                .flatten()
                .find(|v| v.name == vm.name)
                .unwrap_or_else(|| panic!("no volume {}", vm.name));
            let volume_dir = dir.join(&vm.name);
            materialize(self.cp, pod, volume, &volume_dir).await;
            let volume_dir = match &vm.sub_path {
                Some(sub) if !sub.is_empty() => volume_dir.join(sub),
                _ => volume_dir,
            };
            mounted.push((vm.mount_path.clone(), volume_dir));
        }
        mounted.sort_by_key(|(path, _)| std::cmp::Reverse(path.len()));
        Mounts(mounted)
    }

    /// env is the image's environment, then the container's resolved against the Pod,
    /// with mount paths and listen addresses made local.
    async fn env(
        &self,
        pod: &Pod,
        c: &Container,
        mounts: &Mounts,
        ports: &Ports,
    ) -> BTreeMap<String, String> {
        let mut env = self.image.env();
        for var in c.env.iter().flatten() {
            let value = self.value_of(pod, var).await;
            env.insert(var.name.clone(), mounts.local(&value));
        }
        assert!(c.env_from.is_none(), "envFrom is not emulated");
        for value in env.values_mut() {
            ports.localize(value);
        }
        env
    }

    /// value_of resolves one container variable against the Pod.
    async fn value_of(&self, pod: &Pod, var: &EnvVar) -> String {
        match (&var.value, &var.value_from) {
            (Some(v), None) => {
                assert!(
                    !v.contains("$("),
                    "{}: $(VAR) expansion is not emulated",
                    var.name
                );
                v.clone()
            }
            (None, Some(from)) => {
                if let Some(fr) = &from.field_ref {
                    field(pod, &fr.field_path)
                } else if let Some(sk) = &from.secret_key_ref {
                    let data = secret_data(self.cp, &self.ns, &sk.name).await;
                    String::from_utf8(data.get(&sk.key).cloned().unwrap_or_default())
                        .expect("a UTF-8 secret")
                } else if let Some(ck) = &from.config_map_key_ref {
                    let data = config_map_data(self.cp, &self.ns, &ck.name).await;
                    String::from_utf8(data.get(&ck.key).cloned().unwrap_or_default())
                        .expect("a UTF-8 value")
                } else {
                    panic!("{}: a valueFrom this kubelet lacks: {from:?}", var.name);
                }
            }
            (None, None) => String::new(),
            (Some(_), Some(_)) => panic!("{}: value and valueFrom", var.name),
        }
    }

    /// in_cluster_kubeconfig writes, into `dir`, a kubeconfig naming the mounted
    /// ServiceAccount token and CA files, and returns its path.
    fn in_cluster_kubeconfig(&self, mounts: &Mounts, dir: &Path) -> PathBuf {
        let sa_dir = mounts
            .dir(SERVICE_ACCOUNT_DIR)
            .expect("admission mounted the ServiceAccount's token");
        let kubeconfig = dir.join("in-cluster.kubeconfig");
        let config = json!({
            "apiVersion": "v1", "kind": "Config", "current-context": "in-cluster",
            "clusters": [{"name": "in-cluster", "cluster": {
                "server": self.cp.server_url(),
                "certificate-authority": sa_dir.join("ca.crt")}}],
            "users": [{"name": "sa", "user": {"tokenFile": sa_dir.join("token")}}],
            "contexts": [{"name": "in-cluster", "context": {"cluster": "in-cluster", "user": "sa"}}],
        });
        std::fs::write(&kubeconfig, config.to_string()).expect("writing the kubeconfig");
        kubeconfig
    }

    /// start runs the container's command (its `command` and `args` replace the image's
    /// entrypoint and command) with `env`, and collects its stderr lines.
    fn start(
        &self,
        c: &Container,
        mounts: &Mounts,
        env: &BTreeMap<String, String>,
    ) -> (Child, Arc<Mutex<Vec<String>>>) {
        let mut argv = match &c.command {
            Some(command) => command.iter().map(|a| mounts.local(a)).collect(),
            None => strings(&self.image.config["Entrypoint"]),
        };
        match &c.args {
            Some(args) => argv.extend(args.iter().map(|a| mounts.local(a))),
            None if c.command.is_none() => argv.extend(strings(&self.image.config["Cmd"])),
            None => {}
        }
        assert!(!argv.is_empty(), "nothing to run");
        let exe = self.image.root.join(argv.remove(0).trim_start_matches('/'));
        let workdir = match &c.working_dir {
            Some(dir) => self.image.root.join(dir.trim_start_matches('/')),
            None => self.image.workdir(),
        };
        let mut cmd = Command::new(&exe);
        cmd.args(&argv)
            .env_clear()
            .envs(env)
            .current_dir(workdir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = spawn_tied(cmd).expect("starting the container");
        let stderr = child.stderr.take().expect("stderr");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&logs);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
        (child, logs)
    }

    /// terminate ends a pod as the kubelet does: the Pod is deleted (it keeps
    /// its deletionTimestamp while the kubelet works), the preStop sleep runs
    /// while `endpoints` still route to it, then it leaves `endpoints`, gets
    /// SIGTERM and must exit 0 within the grace period; then the Pod goes.
    ///
    /// # Panics
    ///
    /// When the pod does not exit 0 within its grace period, or the API server refuses a
    /// deletion.
    pub async fn terminate(&self, mut replica: Replica, template: &Pod, endpoints: &Endpoints) {
        let pods = Api::<Pod>::namespaced(self.cp.admin_client(), &self.ns);
        pods.delete(&replica.pod, &DeleteParams::default())
            .await
            .unwrap_or_else(|e| panic!("deleting Pod {}: {e}", replica.pod));
        let c = container(template);
        let pre_stop = c
            .lifecycle
            .as_ref()
            .and_then(|l| l.pre_stop.as_ref())
            .and_then(|h| h.sleep.as_ref())
            .expect("a preStop sleep")
            .seconds;
        // The kubelet's preStop sleep action, for the seconds the template says.
        tokio::time::sleep(Duration::from_secs(
            u64::try_from(pre_stop).expect("seconds"),
        ))
        .await;
        endpoints.remove(replica.addr);
        let grace = template
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds)
            .expect("a grace period");
        let grace = Duration::from_secs(u64::try_from(grace - pre_stop).expect("seconds"));
        stop_within(&mut replica, grace).await;
        // The kubelet's final delete; a Pod never bound to a node is already gone.
        let gone = pods
            .delete(
                &replica.pod,
                &DeleteParams {
                    grace_period_seconds: Some(0),
                    ..DeleteParams::default()
                },
            )
            .await;
        match gone {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => panic!("removing Pod {}: {e}", replica.pod),
        }
    }
}

/// wait_ready polls the template's readiness probe until it passes (bounded).
async fn wait_ready(replica: &mut Replica, c: &Container, ports: &Ports) {
    let probe = c
        .readiness_probe
        .as_ref()
        .and_then(|p| p.http_get.as_ref())
        .expect("an httpGet readiness probe");
    let probe_addr = ports.addr(container_port(c, &probe.port));
    let path = probe.path.clone().unwrap_or_else(|| "/".into());
    let deadline = Instant::now() + WAIT;
    while get_status(probe_addr, &path).await != 200 {
        if let Ok(Some(status)) = replica.child.try_wait() {
            panic!("{} exited ({status}):\n{}", replica.pod, replica.log());
        }
        assert!(
            Instant::now() < deadline,
            "{} not ready within {WAIT:?}:\n{}",
            replica.pod,
            replica.log()
        );
        tokio::time::sleep(POLL).await;
    }
}

/// stop_within sends SIGTERM and asserts an exit 0 within `grace`.
async fn stop_within(replica: &mut Replica, grace: Duration) {
    let pid = i32::try_from(replica.child.id()).expect("a pid");
    // SAFETY: kill has no memory effects; the pid is our child's.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = Instant::now() + grace;
    let status = loop {
        if let Some(status) = replica.child.try_wait().expect("waiting for the pod") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "{} still running after the grace period:\n{}",
            replica.pod,
            replica.log()
        );
        tokio::time::sleep(POLL).await;
    };
    assert!(
        status.success(),
        "{} exited {status}:\n{}",
        replica.pod,
        replica.log()
    );
}

/// Endpoints are the ready pods a Service routes to, taken in turn.
#[derive(Default)]
pub struct Endpoints {
    ready: Mutex<Vec<SocketAddr>>,
    next: AtomicUsize,
}

impl Endpoints {
    /// add puts a ready pod into rotation.
    pub fn add(&self, addr: SocketAddr) {
        self.ready
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(addr);
    }

    /// remove takes a pod out of rotation.
    pub fn remove(&self, addr: SocketAddr) {
        self.ready
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|a| *a != addr);
    }

    /// pick is the next pod in rotation, None when none is ready.
    pub fn pick(&self) -> Option<SocketAddr> {
        let ready = self.ready.lock().unwrap_or_else(|e| e.into_inner());
        (!ready.is_empty()).then(|| ready[self.next.fetch_add(1, Ordering::Relaxed) % ready.len()])
    }
}
