//! The rendered pod, run end to end: `helm install` puts the chart on the test
//! API server, and this module plays the parts of the ReplicaSet controller,
//! the kubelet and the Service for it, so that three processes of the built
//! image run exactly as the Deployment's pod template says.
//!
//! - Pods are created on the API server from the stored Deployment's template,
//!   so that admission adds what it adds (the ServiceAccount token volume).
//! - The "kubelet" starts the image's entrypoint with the container's
//!   `command`/`args`, the image's env then the container's, with `fieldRef`,
//!   `secretKeyRef` and `configMapKeyRef` resolved against the Pod; every
//!   volume mount is materialized in a temporary directory (projected
//!   ServiceAccount tokens from the TokenRequest API for the Pod's account,
//!   audience and expiry as the volume asks, bound to the Pod; Secrets,
//!   ConfigMaps and downward API files), and values naming a mount path are
//!   pointed at that directory. The ConfigMap `kube-root-ca.crt` is created as
//!   kube-controller-manager would.
//! - Three things cannot be as in a pod without a kubelet, and are the only
//!   departures: the pod's network namespace is a loopback port per pod (a
//!   listen address on a container port becomes `127.0.0.1:<port>`, and the
//!   probe uses it); the in-cluster configuration, which the client reads at
//!   the fixed path `/var/run/secrets/kubernetes.io/serviceaccount`, is a
//!   kubeconfig naming the same mounted token and CA files; the process runs
//!   as this test's user.
//! - Readiness is the template's own readiness probe, polled (bounded).
//! - Alertmanager is configured with the receiver of the chart's NOTES (its
//!   URL pointed at a pod, its `credentials_file` at a projected token for the
//!   senders' ServiceAccount): one Alertmanager per replica, since a Service's
//!   load balancing needs kube-proxy.
//! - The rolling restart follows the template's strategy (`maxSurge` 1,
//!   `maxUnavailable` 0) and the kubelet's termination: a new pod ready first,
//!   then the old one keeps receiving traffic through its `preStop` sleep (the
//!   endpoints' propagation delay at its worst), is taken out of rotation, gets
//!   SIGTERM and must exit 0 within `terminationGracePeriodSeconds`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, Pod, Secret, ServiceAccount, Volume, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::{Value, json};
use testenv::{ControlPlane, Identity};

use crate::alertmanager::Alertmanager;
use crate::chart::{helm, pod_from_template};
use crate::image::{Image, get_status, image};
use crate::support::{Http, PROMETHEUS, http, plane, rrs, webhook};

/// RELEASE is the Helm release name.
const RELEASE: &str = "sg";
/// SENDER is the ServiceAccount Alertmanager runs as; the chart's senders Role binds it.
const SENDER: &str = "alertmanager";
/// AUDIENCE is the audience the gateway accepts tokens for (its default).
const AUDIENCE: &str = "signal-gateway";
/// WAIT bounds every wait in this module.
const WAIT: Duration = Duration::from_secs(60);
/// POLL is the interval of bounded polling.
const POLL: Duration = Duration::from_millis(50);

/// token asks the TokenRequest API for a token of ServiceAccount `account`.
async fn token(
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

/// write_keys writes `data` into `dir`: every key, or only `items` (key -> path).
fn write_keys(
    dir: &Path,
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<Vec<(String, String)>>,
    what: &str,
) {
    let items = items.unwrap_or_else(|| data.keys().map(|k| (k.clone(), k.clone())).collect());
    for (key, path) in items {
        let bytes = data
            .get(&key)
            .unwrap_or_else(|| panic!("{what} has no key {key}"));
        let file = dir.join(path);
        std::fs::create_dir_all(file.parent().expect("a parent")).expect("a mount dir");
        std::fs::write(&file, bytes).expect("writing a mounted file");
    }
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
        let items = secret
            .items
            .as_ref()
            .map(|i| i.iter().map(|k| (k.key.clone(), k.path.clone())).collect());
        let data = secret_data(cp, ns, name).await;
        write_keys(dir, &data, items, &format!("Secret {name}"));
    } else if let Some(cm) = &volume.config_map {
        let items = cm
            .items
            .as_ref()
            .map(|i| i.iter().map(|k| (k.key.clone(), k.path.clone())).collect());
        let data = config_map_data(cp, ns, &cm.name).await;
        write_keys(dir, &data, items, &format!("ConfigMap {}", cm.name));
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
        let items = cm
            .items
            .as_ref()
            .map(|i| i.iter().map(|k| (k.key.clone(), k.path.clone())).collect());
        let data = config_map_data(cp, ns, &cm.name).await;
        write_keys(dir, &data, items, &format!("ConfigMap {}", cm.name));
    } else if let Some(secret) = &source.secret {
        let items = secret
            .items
            .as_ref()
            .map(|i| i.iter().map(|k| (k.key.clone(), k.path.clone())).collect());
        let data = secret_data(cp, ns, &secret.name).await;
        write_keys(dir, &data, items, &format!("Secret {}", secret.name));
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

/// Replica is one pod's container process.
struct Replica {
    pod: String,
    child: Child,
    addr: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
    _mounts: tempfile::TempDir,
}

impl Replica {
    fn log(&self) -> String {
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

/// Kubelet runs pods of one namespace from the unpacked image.
struct Kubelet<'a> {
    cp: &'a ControlPlane,
    ns: String,
    image: &'a Image,
}

impl Kubelet<'_> {
    /// create_pod creates Pod `name` from the Deployment's template, as the
    /// ReplicaSet controller does, and returns it as admission left it.
    async fn create_pod(&self, deployment: &Deployment, name: &str) -> Pod {
        Api::<Pod>::namespaced(self.cp.admin_client(), &self.ns)
            .create(&PostParams::default(), &pod_from_template(deployment, name))
            .await
            .unwrap_or_else(|e| panic!("creating Pod {name}: {e}"))
    }

    /// run starts the pod's container and returns once its readiness probe passes.
    async fn run(&self, pod: &Pod) -> Replica {
        let name = pod.metadata.name.clone().expect("a pod name");
        let c = container(pod);
        let spec = pod.spec.as_ref().expect("a pod spec");
        let mounts = tempfile::tempdir().expect("a mounts dir");

        // Volumes, mounted as files.
        let mut mounted: Vec<(String, PathBuf)> = Vec::new();
        for vm in c.volume_mounts.iter().flatten() {
            let volume = spec
                .volumes
                .iter()
                .flatten()
                .find(|v| v.name == vm.name)
                .unwrap_or_else(|| panic!("no volume {}", vm.name));
            let dir = mounts.path().join(&vm.name);
            materialize(self.cp, pod, volume, &dir).await;
            let dir = match &vm.sub_path {
                Some(sub) if !sub.is_empty() => dir.join(sub),
                _ => dir,
            };
            mounted.push((vm.mount_path.clone(), dir));
        }
        // Longest mount path first, so that nested mounts win.
        mounted.sort_by_key(|(path, _)| std::cmp::Reverse(path.len()));
        let local = |value: &str| -> String {
            for (path, dir) in &mounted {
                if let Some(rest) = value.strip_prefix(path.as_str())
                    && (rest.is_empty() || rest.starts_with('/'))
                {
                    return format!("{}{rest}", dir.display());
                }
            }
            value.to_owned()
        };

        // The pod's network namespace: its container port on a loopback port.
        let http_port = c
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some("http"))
            .expect("a port named http")
            .container_port;
        // Every container port gets a loopback port of its own.
        let ports: BTreeMap<i32, u16> = c
            .ports
            .iter()
            .flatten()
            .map(|p| (p.container_port, testenv::free_port().expect("a free port")))
            .collect();
        let port = ports[&http_port];

        // Env: the image's, then the container's, resolved against the Pod.
        let mut env = self.image.env();
        for var in c.env.iter().flatten() {
            let value = match (&var.value, &var.value_from) {
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
            };
            env.insert(var.name.clone(), local(&value));
        }
        assert!(c.env_from.is_none(), "envFrom is not emulated");
        for value in env.values_mut() {
            for (container_port, port) in &ports {
                // Any address of the pod, IPv4 or dual-stack (the chart's `[::]`).
                if *value == format!("0.0.0.0:{container_port}")
                    || *value == format!("[::]:{container_port}")
                {
                    *value = format!("127.0.0.1:{port}");
                }
            }
        }
        assert_eq!(
            env.get("GATEWAY_LISTEN_ADDR").map(String::as_str),
            Some(format!("127.0.0.1:{port}").as_str()),
            "the template listens on its http port"
        );
        // The in-cluster configuration, from the same mounted files.
        let sa_dir = mounted
            .iter()
            .find(|(path, _)| path == "/var/run/secrets/kubernetes.io/serviceaccount")
            .map(|(_, dir)| dir.clone())
            .expect("admission mounted the ServiceAccount's token");
        let kubeconfig = mounts.path().join("in-cluster.kubeconfig");
        let config = json!({
            "apiVersion": "v1", "kind": "Config", "current-context": "in-cluster",
            "clusters": [{"name": "in-cluster", "cluster": {
                "server": self.cp.server_url(),
                "certificate-authority": sa_dir.join("ca.crt")}}],
            "users": [{"name": "sa", "user": {"tokenFile": sa_dir.join("token")}}],
            "contexts": [{"name": "in-cluster", "context": {"cluster": "in-cluster", "user": "sa"}}],
        });
        std::fs::write(&kubeconfig, config.to_string()).expect("writing the kubeconfig");
        env.insert("KUBECONFIG".into(), kubeconfig.display().to_string());

        // Command and args replace the image's entrypoint and command.
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .into_iter()
                .flatten()
                .map(|s| s.as_str().expect("a string").to_owned())
                .collect()
        };
        let mut argv = match &c.command {
            Some(command) => command.iter().map(|a| local(a)).collect(),
            None => strings(&self.image.config["Entrypoint"]),
        };
        match &c.args {
            Some(args) => argv.extend(args.iter().map(|a| local(a))),
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
            .envs(&env)
            .current_dir(workdir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = testenv::spawn_tied(cmd).expect("starting the container");
        let stderr = child.stderr.take().expect("stderr");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&logs);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
        let mut replica = Replica {
            pod: name,
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            logs,
            _mounts: mounts,
        };

        // The template's readiness probe gates the pod.
        let probe = c
            .readiness_probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .expect("an httpGet readiness probe");
        let probe_port = ports[&container_port(c, &probe.port)];
        let probe_addr = SocketAddr::from(([127, 0, 0, 1], probe_port));
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
        replica
    }

    /// terminate ends a pod as the kubelet does: the Pod is deleted (it keeps
    /// its deletionTimestamp while the kubelet works), the preStop sleep runs
    /// while `endpoints` still route to it, then it leaves `endpoints`, gets
    /// SIGTERM and must exit 0 within the grace period; then the Pod goes.
    async fn terminate(&self, mut replica: Replica, template: &Pod, endpoints: &Endpoints) {
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

/// Endpoints are the ready pods a Service routes to, taken in turn.
#[derive(Default)]
struct Endpoints {
    ready: Mutex<Vec<SocketAddr>>,
    next: AtomicUsize,
}

impl Endpoints {
    fn add(&self, addr: SocketAddr) {
        self.ready
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(addr);
    }

    fn remove(&self, addr: SocketAddr) {
        self.ready
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|a| *a != addr);
    }

    fn pick(&self) -> Option<SocketAddr> {
        let ready = self.ready.lock().unwrap_or_else(|e| e.into_inner());
        (!ready.is_empty()).then(|| ready[self.next.fetch_add(1, Ordering::Relaxed) % ready.len()])
    }
}

/// receiver is the Alertmanager receiver of the chart's NOTES (from `helm
/// install` output), with its URL pointed at `addr` and its credentials file at `token`.
fn receiver(notes: &str, addr: SocketAddr, token: &Path) -> serde_yaml_ng::Value {
    let snippet: String = notes
        .lines()
        .skip_while(|l| !l.starts_with("receivers:"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut parsed: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&snippet).expect("the NOTES snippet is YAML");
    let hook = &mut parsed["receivers"][0]["webhook_configs"][0];
    let url = hook["url"].as_str().expect("a URL").to_owned();
    let path = url
        .split_once(".svc:")
        .and_then(|(_, rest)| rest.split_once('/'))
        .map(|(_, path)| format!("/{path}"))
        .expect("an in-cluster URL");
    assert_eq!(path, PROMETHEUS, "the NOTES name the webhook endpoint");
    hook["url"] = format!("http://{addr}{path}").into();
    let auth = &mut hook["http_config"]["authorization"];
    assert_eq!(auth["type"].as_str(), Some("Bearer"), "{notes}");
    assert!(auth["credentials_file"].is_string(), "{notes}");
    auth["credentials_file"] = token.display().to_string().into();
    parsed["receivers"].clone()
}

/// rr_count is the number of active RRs about pod `target` and the sum of their counts.
async fn rr_count(cp: &ControlPlane, ns: &str, target: &str) -> (usize, i64) {
    let list = rrs(cp, ns).await;
    let about: Vec<_> = list
        .iter()
        .filter(|rr| rr.spec.target_resource.name == target && rr.is_active())
        .collect();
    (
        about.len(),
        about.iter().map(|rr| rr.occurrence_count()).sum(),
    )
}

/// send posts one firing alert about `target` to a ready endpoint with the
/// sender's token; it returns whether the gateway acknowledged it (2xx).
async fn send(http: &Http, endpoints: &Endpoints, token: &str, target: &str) -> bool {
    let Some(addr) = endpoints.pick() else {
        return false;
    };
    let body = webhook(vec![json!({
        "status": "firing",
        "labels": {"alertname": "KubePodCrashLooping", "namespace": "shop", "pod": target, "severity": "critical"},
        "startsAt": "2026-11-27T08:14:27Z",
    })]);
    let req = axum::http::Request::post(format!("http://{addr}{PROMETHEUS}"))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(body.into()))
        .expect("a request");
    let Ok(res) = http.request(req).await else {
        return false;
    };
    let ok = res.status().is_success();
    // Read the whole answer: a 2xx counts once its body arrived.
    let body = res.into_body().collect().await;
    ok && body.is_ok()
}

#[tokio::test]
async fn the_rendered_pod_runs_three_replicas_behind_alertmanager_and_rolls_without_loss() {
    let img = image();
    let cp = plane().await;
    let ns = cp.new_namespace().await.expect("a test namespace");
    let ns = ns.name().to_owned();
    let admin = cp.admin_client();
    let kubeconfig = cp.kubeconfig_path(Identity::Admin);
    let sender_set = format!("senders.serviceAccounts[0].namespace={ns}");
    let sets = [
        // The shared control plane has the CRD already.
        "crds.install=false",
        "preStopSleepSeconds=1",
        // The alerts are about Pods that do not exist: with owner resolution they would be rejected.
        "ownerResolution.enabled=false",
        &format!("senders.serviceAccounts[0].name={SENDER}"),
        &sender_set,
    ];
    let mut args = vec![
        "install",
        RELEASE,
        "chart/",
        "--namespace",
        &ns,
        "--kubeconfig",
        kubeconfig.to_str().expect("UTF-8"),
    ];
    for s in &sets {
        args.extend(["--set", s]);
    }
    let (stdout, _) = helm(&args);
    let notes = stdout
        .split_once("NOTES:")
        .map(|(_, n)| n.to_owned())
        .unwrap_or_else(|| panic!("no NOTES:\n{stdout}"));

    // kube-controller-manager's root CA publisher; a ServiceAccount for Alertmanager.
    Api::<ConfigMap>::namespaced(admin.clone(), &ns)
        .create(
            &PostParams::default(),
            &ConfigMap {
                metadata: ObjectMeta {
                    name: Some("kube-root-ca.crt".into()),
                    ..ObjectMeta::default()
                },
                data: Some(BTreeMap::from([(
                    "ca.crt".to_owned(),
                    String::from_utf8(cp.ca_pem().to_vec()).expect("a PEM"),
                )])),
                ..ConfigMap::default()
            },
        )
        .await
        .expect("publishing the root CA");
    Api::<ServiceAccount>::namespaced(admin.clone(), &ns)
        .create(
            &PostParams::default(),
            &ServiceAccount {
                metadata: ObjectMeta {
                    name: Some(SENDER.into()),
                    ..ObjectMeta::default()
                },
                ..ServiceAccount::default()
            },
        )
        .await
        .expect("Alertmanager's ServiceAccount");
    // RBAC reaches the authorizer through informers: wait until the bindings apply.
    let (sender_client, _) = crate::chart::service_account_client(cp, &ns, SENDER).await;
    testenv::wait_allowed(
        &sender_client,
        &ns,
        "signal-gateway.kubernaut.ai",
        "signals",
        "create",
    )
    .await
    .expect("the senders Role applies");
    let (gateway_client, _) = crate::chart::service_account_client(cp, &ns, RELEASE).await;
    for (group, resource) in [
        ("kubernaut.ai", "remediationrequests"),
        ("coordination.k8s.io", "leases"),
    ] {
        testenv::wait_allowed(&gateway_client, &ns, group, resource, "create")
            .await
            .expect("the gateway's Role applies");
    }
    testenv::wait_allowed(
        &gateway_client,
        "",
        "authentication.k8s.io",
        "tokenreviews",
        "create",
    )
    .await
    .expect("the gateway's ClusterRole applies");

    let deployment = Api::<Deployment>::namespaced(admin.clone(), &ns)
        .get(RELEASE)
        .await
        .expect("the installed Deployment");
    let replicas = deployment.spec.replicas.expect("replicas");
    assert_eq!(replicas, 3, "the chart's default");
    let strategy = deployment
        .spec
        .strategy
        .as_ref()
        .and_then(|s| s.rolling_update.as_ref())
        .expect("a rolling update");
    assert_eq!(strategy.max_unavailable, Some(IntOrString::Int(0)));
    assert_eq!(strategy.max_surge, Some(IntOrString::Int(1)));

    let kubelet = Kubelet {
        cp,
        ns: ns.clone(),
        image: img,
    };
    let mut pods = Vec::new();
    let mut running = Vec::new();
    for i in 0..replicas {
        let pod = kubelet
            .create_pod(&deployment, &format!("{RELEASE}-a-{i}"))
            .await;
        running.push(kubelet.run(&pod).await);
        pods.push(pod);
    }
    // The downward API reached each process: it names itself after its pod.
    for (pod, replica) in pods.iter().zip(&running) {
        let name = pod.metadata.name.as_deref().expect("a name");
        assert!(
            replica.log().contains(&format!("\"instance\":\"{name}\"")),
            "{name}:\n{}",
            replica.log()
        );
    }

    // Alertmanager, one per replica, with the NOTES receiver and a projected
    // token of its ServiceAccount for the gateway's audience.
    let http = http();
    let secrets = tempfile::tempdir().expect("Alertmanager's mounts");
    let token_path = secrets.path().join("token");
    std::fs::write(
        &token_path,
        token(cp, &ns, SENDER, Some(AUDIENCE), Some(3600), None).await,
    )
    .expect("writing Alertmanager's token");
    let mut managers = Vec::new();
    for replica in &running {
        let config = json!({
            "route": {"receiver": "signal-gateway", "group_by": ["alertname"],
                      "group_wait": "0s", "group_interval": "1s", "repeat_interval": "1h"},
            "receivers": receiver(&notes, replica.addr, &token_path),
        });
        managers.push(Alertmanager::start(
            &serde_yaml_ng::to_string(&config).expect("a config"),
        ));
    }
    for am in &managers {
        am.wait_ready(&http).await;
    }

    // 15 concurrent alerts about one pod, five through each Alertmanager.
    let alert = |i: usize| {
        json!({"labels": {"alertname": format!("Alert{i:02}"), "namespace": "shop",
                          "pod": "cart-0", "severity": "critical"},
               "annotations": {"summary": "one of fifteen"}})
    };
    let fired = managers.iter().enumerate().map(|(m, am)| {
        let http = http.clone();
        let alerts: Vec<Value> = (0..5).map(|k| alert(m * 5 + k)).collect();
        async move { am.fire(&http, Value::Array(alerts)).await }
    });
    futures::future::join_all(fired).await;
    // Alertmanager counts a notification when it starts sending it, and a
    // failure (after its retries) when no attempt got a 2xx.
    let deadline = Instant::now() + WAIT;
    let logs = |running: &[Replica]| {
        running
            .iter()
            .map(Replica::log)
            .collect::<Vec<_>>()
            .join("\n")
    };
    loop {
        let (mut sent, mut failed) = (0, 0);
        for am in &managers {
            let (s, f) = am.notifications(&http).await;
            sent += s;
            failed += f;
        }
        assert_eq!(failed, 0, "a notification failed:\n{}", logs(&running));
        let (active, count) = rr_count(cp, &ns, "cart-0").await;
        if sent >= 15 && count >= 15 {
            assert_eq!(sent, 15, "one notification per alert");
            assert_eq!((active, count), (1, 15), "one RR, every alert counted once");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{sent} of 15 notifications sent, {count} counted:\n{}",
            logs(&running)
        );
        tokio::time::sleep(POLL).await;
    }
    let list = rrs(cp, &ns).await;
    assert_eq!(list.len(), 1, "nothing else was written: {list:?}");
    drop(managers);

    // A rolling restart under load: one new pod ready, then one old pod gone.
    let sender_token = token(cp, &ns, SENDER, Some(AUDIENCE), Some(3600), None).await;
    let endpoints = Arc::new(Endpoints::default());
    for replica in &running {
        endpoints.add(replica.addr);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let mut senders = Vec::new();
    for _ in 0..4 {
        let (http, endpoints, stop, acked, token) = (
            http.clone(),
            Arc::clone(&endpoints),
            Arc::clone(&stop),
            Arc::clone(&acked),
            sender_token.clone(),
        );
        senders.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if send(&http, &endpoints, &token, "roll-0").await {
                    acked.fetch_add(1, Ordering::Relaxed);
                } else {
                    tokio::task::yield_now().await;
                }
            }
        }));
    }
    let mut replaced = Vec::new();
    for (i, old) in running.into_iter().enumerate() {
        let pod = kubelet
            .create_pod(&deployment, &format!("{RELEASE}-b-{i}"))
            .await;
        let new = kubelet.run(&pod).await;
        endpoints.add(new.addr);
        let before = acked.load(Ordering::Relaxed);
        kubelet.terminate(old, &pods[i], &endpoints).await;
        assert!(
            acked.load(Ordering::Relaxed) > before,
            "signals were acknowledged while pod {i} went"
        );
        replaced.push(new);
    }
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        s.await.expect("a sender");
    }
    let acked = acked.load(Ordering::Relaxed);
    let (active, count) = rr_count(cp, &ns, "roll-0").await;
    let logs = || {
        replaced
            .iter()
            .map(Replica::log)
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(active, 1, "one RR for the rolled problem:\n{}", logs());
    assert!(
        u64::try_from(count).expect("a count") >= acked,
        "{acked} signals acknowledged, {count} counted:\n{}",
        logs()
    );
    assert!(acked > 0);
    for new in &replaced {
        assert_eq!(get_status(new.addr, "/readyz").await, 200, "{}", new.log());
    }
}
