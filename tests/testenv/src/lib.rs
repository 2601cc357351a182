//! testenv runs a real kube-apiserver and etcd on loopback for signal-gateway's tests.
//!
//! [`shared`] starts one control plane per test binary; [`ControlPlane::start`]
//! starts a private one for tests that stop and restart its parts. Each test
//! should work in a namespace of its own from [`ControlPlane::new_namespace`],
//! and create its clients itself: a `kube::Client` belongs to the tokio
//! runtime it was first used on, and every `#[tokio::test]` has its own.
//! [`gateway::Gateway`] runs signal-gateway processes against a control plane,
//! for the end-to-end tests and the bench; [`collector::Collector`] runs an OpenTelemetry
//! Collector for them; [`prometheus`] reads what they all serve on `/metrics`;
//! [`kubelet::Kubelet`] runs the chart's pods from the container image; [`tool`] finds the
//! other pinned tools.

#![deny(rust_2018_idioms)]

pub mod collector;
pub mod gateway;
pub mod kubelet;
pub mod lambda;
pub mod mount;
mod process;
pub mod prometheus;

use std::fmt::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine as _;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams, PostParams};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub use crate::process::spawn_tied;
use crate::process::{Proc, tail};

/// READY_TIMEOUT bounds every wait for a component to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// POLL_INTERVAL is the pause between readiness probes.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// PROBE_TIMEOUT bounds one readiness probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// START_ATTEMPTS is how often start-up picks new ports after a port clash.
const START_ATTEMPTS: usize = 5;
/// FIELD_MANAGER owns everything testenv applies.
const FIELD_MANAGER: &str = "testenv";
/// GATEWAY_ROLE names the Role, RoleBinding, ClusterRole and ClusterRoleBinding
/// granted to the gateway identity.
pub const GATEWAY_ROLE: &str = "signal-gateway";
/// NAMESPACE_LABEL marks namespaces created by testenv.
pub const NAMESPACE_LABEL: &str = "testenv.kubernaut.ai/test";

/// Error is what can go wrong starting or driving a control plane.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{context}: {source}")]
    Kube {
        context: String,
        #[source]
        source: kube::Error,
    },
    #[error(
        "{component} not ready after {waited:?}: {reason}\n--- last lines of {log} ---\n{tail}"
    )]
    NotReady {
        component: &'static str,
        waited: Duration,
        reason: String,
        log: PathBuf,
        tail: String,
    },
    #[error("{0}")]
    Other(String),
}

/// Result is `std::result::Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io {
        context: context.into(),
        source,
    }
}

fn kube_err(context: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    move |source| Error::Kube {
        context: context.into(),
        source,
    }
}

/// Identity is one of the users in the API server's static token file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Identity {
    /// Admin is in `system:masters` and may do anything.
    Admin,
    /// Gateway has exactly the chart's rules with `scope=managed`: in
    /// namespaces from [`ControlPlane::new_namespace`], those of its Role and
    /// of its reads Role (owner resolution and the scope label, as granted when
    /// `ownerResolution.namespaces` lists the namespace); cluster-wide, those
    /// of its ClusterRoles.
    Gateway,
    /// Nobody is authenticated and has no permissions beyond discovery.
    Nobody,
}

impl Identity {
    /// ALL lists every identity.
    pub const ALL: [Identity; 3] = [Identity::Admin, Identity::Gateway, Identity::Nobody];

    /// user_name is the identity's user name as the API server sees it.
    #[must_use]
    pub fn user_name(self) -> &'static str {
        match self {
            Identity::Admin => "admin",
            Identity::Gateway => "gateway",
            Identity::Nobody => "nobody",
        }
    }

    fn groups(self) -> &'static str {
        match self {
            Identity::Admin => "system:masters",
            Identity::Gateway | Identity::Nobody => "",
        }
    }

    fn index(self) -> usize {
        match self {
            Identity::Admin => 0,
            Identity::Gateway => 1,
            Identity::Nobody => 2,
        }
    }
}

/// repo_root is the signal-gateway repository this crate lives in.
#[must_use]
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// binaries_dir finds kube-apiserver and etcd: `KUBE_BINARIES_DIR` if set,
/// else the last line printed by `hack/kube-binaries.sh` (which builds them on
/// first use). The answer is computed once per process.
pub fn binaries_dir() -> Result<PathBuf> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(find_binaries).clone().map_err(Error::Other)
}

fn find_binaries() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("KUBE_BINARIES_DIR") {
        return Ok(PathBuf::from(dir));
    }
    last_line_of(&repo_root().join("hack/kube-binaries.sh"), &[])
}

/// tool runs `hack/tool.sh NAME`, which installs the pinned tool on first use,
/// and returns the path it prints as its last line.
///
/// # Panics
///
/// When the script fails: the test that needs the tool cannot run.
#[must_use]
pub fn tool(name: &str) -> PathBuf {
    last_line_of(&repo_root().join("hack/tool.sh"), &[name])
        .unwrap_or_else(|e| panic!("installing {name}: {e}"))
}

/// script runs a repository script (`hack/...`) with `args` and returns the path it prints
/// as its last line, as every build and tool script does.
///
/// # Panics
///
/// When the script fails: the test that needs what it builds cannot run.
#[must_use]
pub fn script(path: &str, args: &[&str]) -> PathBuf {
    last_line_of(&repo_root().join(path), args).unwrap_or_else(|e| panic!("{e}"))
}

/// last_line_of runs `script` with `args`, its stderr passed through, and
/// returns the last non-empty line it prints.
fn last_line_of(script: &Path, args: &[&str]) -> Result<PathBuf, String> {
    let out = std::process::Command::new(script)
        .args(args)
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("running {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} {args:?} failed: {}",
            script.display(),
            out.status
        ));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().rev().find(|l| !l.trim().is_empty());
    match last {
        Some(line) => Ok(PathBuf::from(line.trim())),
        None => Err(format!("{} {args:?} printed nothing", script.display())),
    }
}

/// free_port asks the kernel for an unused loopback port.
///
/// The port is released before the child binds it, so another process may take
/// it in between; start-up retries with new ports when that happens.
///
/// # Errors
///
/// When the kernel gives no port.
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(io_err("binding a free port"))?;
    let port = listener
        .local_addr()
        .map_err(io_err("reading a free port"))?
        .port();
    Ok(port)
}

fn random_hex() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// ControlPlane is a running etcd and kube-apiserver with their data.
///
/// Dropping it kills both. The processes also die with the test process,
/// even when the `ControlPlane` is never dropped.
#[derive(Debug)]
pub struct ControlPlane {
    dir: tempfile::TempDir,
    bin_dir: PathBuf,
    etcd_port: u16,
    etcd_peer_port: u16,
    apiserver_port: u16,
    tokens: [String; 3],
    ca_pem: Vec<u8>,
    ca_der: Vec<Vec<u8>>,
    etcd: Mutex<Option<Proc>>,
    apiserver: Mutex<Option<Proc>>,
    cluster_role: tokio::sync::OnceCell<()>,
}

/// Attempt is what one start attempt of a component ended in.
enum Attempt<T> {
    Ready(T),
    PortClash,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ControlPlane {
    /// start runs a fresh etcd and kube-apiserver on free loopback ports and
    /// waits until the API server is ready.
    pub async fn start() -> Result<ControlPlane> {
        // The first call may build the binaries, which takes minutes.
        let bin_dir = tokio::task::spawn_blocking(binaries_dir)
            .await
            .map_err(|e| Error::Other(format!("finding the binaries: {e}")))??;
        let dir = tempfile::Builder::new()
            .prefix("testenv-")
            .tempdir()
            .map_err(io_err("creating the control plane's directory"))?;
        let root = dir.path();

        let key = rcgen::KeyPair::generate()
            .map_err(|e| Error::Other(format!("generating the service account key: {e}")))?;
        write(&root.join("sa.key"), key.serialize_pem().as_bytes())?;
        write(&root.join("sa.pub"), key.public_key_pem().as_bytes())?;
        std::fs::create_dir_all(root.join("pki")).map_err(io_err("creating pki dir"))?;

        let tokens = [random_hex(), random_hex(), random_hex()];
        let mut csv = String::new();
        for id in Identity::ALL {
            let name = id.user_name();
            let _ = writeln!(
                csv,
                "{},{name},{name},\"{}\"",
                tokens[id.index()],
                id.groups()
            );
        }
        write(&root.join("tokens.csv"), csv.as_bytes())?;

        let mut cp = ControlPlane {
            dir,
            bin_dir,
            etcd_port: 0,
            etcd_peer_port: 0,
            apiserver_port: 0,
            tokens,
            ca_pem: Vec::new(),
            ca_der: Vec::new(),
            etcd: Mutex::new(None),
            apiserver: Mutex::new(None),
            cluster_role: tokio::sync::OnceCell::new(),
        };

        for attempt in 1..=START_ATTEMPTS {
            cp.etcd_port = free_port()?;
            cp.etcd_peer_port = free_port()?;
            // A half-initialized data dir remembers the clashing ports.
            let _ = std::fs::remove_dir_all(cp.etcd_data_dir());
            match cp.run_etcd().await? {
                Attempt::Ready(()) => break,
                Attempt::PortClash if attempt < START_ATTEMPTS => continue,
                Attempt::PortClash => {
                    return Err(Error::Other("etcd: ports kept clashing".into()));
                }
            }
        }
        for attempt in 1..=START_ATTEMPTS {
            cp.apiserver_port = free_port()?;
            match cp.run_apiserver().await? {
                Attempt::Ready(()) => break,
                Attempt::PortClash if attempt < START_ATTEMPTS => continue,
                Attempt::PortClash => {
                    return Err(Error::Other("kube-apiserver: ports kept clashing".into()));
                }
            }
        }
        let (ca_pem, ca_der) =
            read_ca(&cp.dir().join("pki/apiserver.crt")).map_err(Error::Other)?;
        cp.ca_pem = ca_pem;
        cp.ca_der = ca_der;
        for id in Identity::ALL {
            write(&cp.kubeconfig_path(id), cp.kubeconfig(id).as_bytes())?;
        }
        Ok(cp)
    }

    /// dir holds the data, certificates, logs and kubeconfigs.
    #[must_use]
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// server_url is the API server's address, `https://127.0.0.1:<port>`.
    #[must_use]
    pub fn server_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.apiserver_port)
    }

    /// ca_pem is the certificate bundle that verifies the API server.
    #[must_use]
    pub fn ca_pem(&self) -> &[u8] {
        &self.ca_pem
    }

    /// token is the bearer token of `id`.
    #[must_use]
    pub fn token(&self, id: Identity) -> &str {
        &self.tokens[id.index()]
    }

    /// apiserver_log is the file kube-apiserver logs to.
    #[must_use]
    pub fn apiserver_log(&self) -> PathBuf {
        self.dir().join("kube-apiserver.log")
    }

    /// etcd_log is the file etcd logs to.
    #[must_use]
    pub fn etcd_log(&self) -> PathBuf {
        self.dir().join("etcd.log")
    }

    /// kubeconfig_path is a kubeconfig file for `id`, with its namespace set to
    /// `default`. It stays valid across API server restarts.
    #[must_use]
    pub fn kubeconfig_path(&self, id: Identity) -> PathBuf {
        self.dir()
            .join(format!("kubeconfig-{}.yaml", id.user_name()))
    }

    /// write_kubeconfig writes the kubeconfig of `id` to `path`.
    pub fn write_kubeconfig(&self, id: Identity, path: &Path) -> Result<()> {
        write(path, self.kubeconfig(id).as_bytes())
    }

    /// client is a new client for `id`. Call it from inside a tokio runtime,
    /// once per test: the client must not outlive that runtime.
    ///
    /// # Panics
    ///
    /// When the client cannot be built, which means testenv is broken.
    #[must_use]
    pub fn client(&self, id: Identity) -> kube::Client {
        client_for(&self.server_url(), &self.ca_der, self.token(id))
            .unwrap_or_else(|e| panic!("building the {} client: {e}", id.user_name()))
    }

    /// admin_client is [`ControlPlane::client`] for [`Identity::Admin`].
    #[must_use]
    pub fn admin_client(&self) -> kube::Client {
        self.client(Identity::Admin)
    }

    /// gateway_client is [`ControlPlane::client`] for [`Identity::Gateway`].
    #[must_use]
    pub fn gateway_client(&self) -> kube::Client {
        self.client(Identity::Gateway)
    }

    /// nobody_client is [`ControlPlane::client`] for [`Identity::Nobody`].
    #[must_use]
    pub fn nobody_client(&self) -> kube::Client {
        self.client(Identity::Nobody)
    }

    /// install_crd applies `crd` and waits until it is established.
    pub async fn install_crd(&self, crd: CustomResourceDefinition) -> Result<()> {
        let name = crd
            .metadata
            .name
            .clone()
            .ok_or_else(|| Error::Other("the CRD has no metadata.name".into()))?;
        let api: Api<CustomResourceDefinition> = Api::all(self.admin_client());
        api.patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&crd),
        )
        .await
        .map_err(kube_err(format!("applying CRD {name}")))?;
        wait_established(&self.admin_client(), &name).await
    }

    /// new_namespace creates a namespace with a random name in which the
    /// gateway identity holds the chart's namespaced rules.
    pub async fn new_namespace(&self) -> Result<TestNamespace> {
        let name = format!("sg-test-{:08x}", rand::random::<u32>());
        self.create_namespace(&name).await
    }

    /// create_namespace creates (or keeps) namespace `name` and grants the
    /// gateway identity the chart's namespaced rules in it, and its
    /// cluster-wide rules once per control plane. It returns once the grants
    /// are in effect.
    pub async fn create_namespace(&self, name: &str) -> Result<TestNamespace> {
        let client = self.admin_client();
        self.cluster_role
            .get_or_try_init(|| async {
                grant_cluster_role(&client).await?;
                self.wait_allowed(Identity::Gateway, "", "", "namespaces", "get")
                    .await
            })
            .await?;

        let pp = PatchParams::apply(FIELD_MANAGER).force();
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                labels: Some([(NAMESPACE_LABEL.to_owned(), "true".to_owned())].into()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        Api::<Namespace>::all(client.clone())
            .patch(name, &pp, &Patch::Apply(&ns))
            .await
            .map_err(kube_err(format!("creating namespace {name}")))?;

        let role = Role {
            metadata: meta(GATEWAY_ROLE),
            rules: Some(read_all_rules(&NAMESPACE_RULES)?),
        };
        Api::<Role>::namespaced(client.clone(), name)
            .patch(GATEWAY_ROLE, &pp, &Patch::Apply(&role))
            .await
            .map_err(kube_err(format!("creating Role {name}/{GATEWAY_ROLE}")))?;
        let binding = RoleBinding {
            metadata: meta(GATEWAY_ROLE),
            role_ref: RoleRef {
                api_group: Some("rbac.authorization.k8s.io".into()),
                kind: "Role".into(),
                name: GATEWAY_ROLE.into(),
            },
            subjects: Some(vec![gateway_subject()]),
        };
        Api::<RoleBinding>::namespaced(client, name)
            .patch(GATEWAY_ROLE, &pp, &Patch::Apply(&binding))
            .await
            .map_err(kube_err(format!(
                "creating RoleBinding {name}/{GATEWAY_ROLE}"
            )))?;

        // The RBAC authorizer learns of new bindings through informers, so a
        // grant takes a moment to apply. Wait until the gateway sees it.
        self.wait_allowed(
            Identity::Gateway,
            name,
            "coordination.k8s.io",
            "leases",
            "create",
        )
        .await?;
        Ok(TestNamespace {
            name: name.to_owned(),
        })
    }

    /// wait_allowed waits until `id` may `verb` `resource` in `namespace`.
    async fn wait_allowed(
        &self,
        id: Identity,
        namespace: &str,
        group: &str,
        resource: &str,
        verb: &str,
    ) -> Result<()> {
        wait_allowed(&self.client(id), namespace, group, resource, verb).await
    }

    /// stop_apiserver kills kube-apiserver (SIGKILL) and waits until it is gone.
    pub fn stop_apiserver(&self) {
        if let Some(mut p) = lock(&self.apiserver).take() {
            p.kill();
        }
    }

    /// start_apiserver starts kube-apiserver again on the same port, with the
    /// same certificates and keys, and waits until it is ready.
    pub async fn start_apiserver(&self) -> Result<()> {
        if lock(&self.apiserver).is_some() {
            return Err(Error::Other("kube-apiserver is already running".into()));
        }
        match self.run_apiserver().await? {
            Attempt::Ready(()) => Ok(()),
            Attempt::PortClash => Err(Error::Other(format!(
                "kube-apiserver: port {} was taken while it was stopped",
                self.apiserver_port
            ))),
        }
    }

    /// stop_etcd kills etcd (SIGKILL) and waits until it is gone.
    pub fn stop_etcd(&self) {
        if let Some(mut p) = lock(&self.etcd).take() {
            p.kill();
        }
    }

    /// start_etcd starts etcd again on the same ports and data and waits until
    /// it is healthy, and then until the API server is ready again.
    pub async fn start_etcd(&self) -> Result<()> {
        if lock(&self.etcd).is_some() {
            return Err(Error::Other("etcd is already running".into()));
        }
        match self.run_etcd().await? {
            Attempt::Ready(()) => {}
            Attempt::PortClash => {
                return Err(Error::Other(format!(
                    "etcd: port {} or {} was taken while it was stopped",
                    self.etcd_port, self.etcd_peer_port
                )));
            }
        }
        if lock(&self.apiserver).is_some() {
            self.wait_apiserver().await?;
        }
        Ok(())
    }

    fn etcd_data_dir(&self) -> PathBuf {
        self.dir().join("etcd-data")
    }

    async fn run_etcd(&self) -> Result<Attempt<()>> {
        let client = format!("http://127.0.0.1:{}", self.etcd_port);
        let peer = format!("http://127.0.0.1:{}", self.etcd_peer_port);
        let args = vec![
            "--name=testenv".to_owned(),
            format!("--data-dir={}", self.etcd_data_dir().display()),
            format!("--listen-client-urls={client}"),
            format!("--advertise-client-urls={client}"),
            format!("--listen-peer-urls={peer}"),
            format!("--initial-advertise-peer-urls={peer}"),
            format!("--initial-cluster=testenv={peer}"),
            "--unsafe-no-fsync".to_owned(),
            "--log-level=warn".to_owned(),
        ];
        let proc = Proc::spawn(&self.bin_dir.join("etcd"), &args, &self.etcd_log())
            .map_err(io_err("starting etcd"))?;
        *lock(&self.etcd) = Some(proc);

        let started = Instant::now();
        loop {
            if let Some(a) = self.check_exited(&self.etcd, "etcd", started)? {
                return Ok(a);
            }
            let reason =
                match tokio::time::timeout(PROBE_TIMEOUT, etcd_health(self.etcd_port)).await {
                    Ok(Ok(())) => return Ok(Attempt::Ready(())),
                    Ok(Err(e)) => e,
                    Err(_) => format!("/health took longer than {PROBE_TIMEOUT:?}"),
                };
            if started.elapsed() > READY_TIMEOUT {
                return Err(self.not_ready(&self.etcd, "etcd", started, reason));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    async fn run_apiserver(&self) -> Result<Attempt<()>> {
        let root = self.dir();
        let args = vec![
            format!("--etcd-servers=http://127.0.0.1:{}", self.etcd_port),
            format!("--secure-port={}", self.apiserver_port),
            "--bind-address=127.0.0.1".to_owned(),
            "--advertise-address=127.0.0.1".to_owned(),
            format!("--cert-dir={}", root.join("pki").display()),
            "--authorization-mode=RBAC".to_owned(),
            format!("--token-auth-file={}", root.join("tokens.csv").display()),
            format!(
                "--service-account-key-file={}",
                root.join("sa.pub").display()
            ),
            format!(
                "--service-account-signing-key-file={}",
                root.join("sa.key").display()
            ),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".to_owned(),
            "--service-cluster-ip-range=10.96.0.0/16".to_owned(),
            // Nothing here reconciles the `kubernetes` Service's endpoints.
            "--endpoint-reconciler-type=none".to_owned(),
        ];
        let proc = Proc::spawn(
            &self.bin_dir.join("kube-apiserver"),
            &args,
            &self.apiserver_log(),
        )
        .map_err(io_err("starting kube-apiserver"))?;
        *lock(&self.apiserver) = Some(proc);
        self.wait_apiserver_attempt().await
    }

    async fn wait_apiserver(&self) -> Result<()> {
        match self.wait_apiserver_attempt().await? {
            Attempt::Ready(()) => Ok(()),
            Attempt::PortClash => Err(Error::Other("kube-apiserver: port clash".into())),
        }
    }

    /// wait_apiserver_attempt polls `/readyz` until it answers `ok`.
    async fn wait_apiserver_attempt(&self) -> Result<Attempt<()>> {
        let started = Instant::now();
        let mut client = None;
        loop {
            if let Some(a) = self.check_exited(&self.apiserver, "kube-apiserver", started)? {
                return Ok(a);
            }
            let reason = match self.probe_apiserver(&mut client).await {
                Ok(()) => return Ok(Attempt::Ready(())),
                Err(reason) => reason,
            };
            if started.elapsed() > READY_TIMEOUT {
                return Err(self.not_ready(&self.apiserver, "kube-apiserver", started, reason));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// probe_apiserver asks `/readyz` once, building the client first when the
    /// serving certificate exists.
    async fn probe_apiserver(&self, client: &mut Option<kube::Client>) -> Result<(), String> {
        if client.is_none() {
            // The serving certificate appears once kube-apiserver has
            // generated it; restarts reuse it.
            let der = if self.ca_der.is_empty() {
                read_ca(&self.dir().join("pki/apiserver.crt"))?.1
            } else {
                self.ca_der.clone()
            };
            let c = client_for(&self.server_url(), &der, self.token(Identity::Admin))
                .map_err(|e| e.to_string())?;
            *client = Some(c);
        }
        let Some(c) = client.as_ref() else {
            return Err("no client".into());
        };
        let req = http::Request::get("/readyz")
            .body(Vec::new())
            .map_err(|e| format!("building /readyz request: {e}"))?;
        match tokio::time::timeout(PROBE_TIMEOUT, c.request_text(req)).await {
            Ok(Ok(body)) if body.trim() == "ok" => Ok(()),
            Ok(Ok(body)) => Err(format!("/readyz answered {body:?}")),
            Ok(Err(e)) => Err(format!("/readyz: {e}")),
            Err(_) => Err(format!("/readyz took longer than {PROBE_TIMEOUT:?}")),
        }
    }

    /// check_exited turns an early exit of a child into a port clash to retry
    /// or an error with its log.
    fn check_exited(
        &self,
        slot: &Mutex<Option<Proc>>,
        component: &'static str,
        started: Instant,
    ) -> Result<Option<Attempt<()>>> {
        let mut guard = lock(slot);
        let Some(proc) = guard.as_mut() else {
            return Err(Error::Other(format!(
                "{component} was stopped while starting"
            )));
        };
        let Some(status) = proc.exited() else {
            return Ok(None);
        };
        let output = proc.output();
        if output.contains("address already in use") {
            *guard = None;
            return Ok(Some(Attempt::PortClash));
        }
        Err(Error::NotReady {
            component,
            waited: started.elapsed(),
            reason: format!("exited: {status}"),
            log: proc.log().to_owned(),
            tail: tail(&output, 40),
        })
    }

    fn not_ready(
        &self,
        slot: &Mutex<Option<Proc>>,
        component: &'static str,
        started: Instant,
        reason: String,
    ) -> Error {
        let guard = lock(slot);
        let (log, output) = guard
            .as_ref()
            .map(|p| (p.log().to_owned(), p.output()))
            .unwrap_or_default();
        Error::NotReady {
            component,
            waited: started.elapsed(),
            reason,
            log,
            tail: tail(&output, 40),
        }
    }

    fn kubeconfig(&self, id: Identity) -> String {
        let ca = base64::engine::general_purpose::STANDARD.encode(&self.ca_pem);
        let user = id.user_name();
        format!(
            "apiVersion: v1
kind: Config
clusters:
- name: testenv
  cluster:
    server: {server}
    certificate-authority-data: {ca}
users:
- name: {user}
  user:
    token: {token}
contexts:
- name: {user}
  context:
    cluster: testenv
    user: {user}
    namespace: default
current-context: {user}
",
            server = self.server_url(),
            token = self.token(id),
        )
    }

    /// kill_now kills both children without blocking on locks; for exit hooks.
    fn kill_now(&self) {
        for slot in [&self.apiserver, &self.etcd] {
            let guard = match slot.try_lock() {
                Ok(g) => Some(g),
                Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
                Err(std::sync::TryLockError::WouldBlock) => None,
            };
            if let Some(mut g) = guard
                && let Some(p) = g.as_mut()
            {
                p.kill();
            }
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop_apiserver();
        self.stop_etcd();
    }
}

/// TestNamespace is a namespace in which the gateway identity holds its Role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestNamespace {
    name: String,
}

impl TestNamespace {
    /// name is the namespace's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl std::fmt::Display for TestNamespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

static SHARED: OnceLock<Result<ControlPlane, String>> = OnceLock::new();

/// shared is the control plane of this test binary, started on first use and
/// kept until the process exits. Use it from any test, with a namespace of its
/// own.
///
/// # Panics
///
/// When the control plane cannot start; every test that uses it then fails
/// with the same message.
pub fn shared() -> &'static ControlPlane {
    let started = SHARED.get_or_init(|| {
        // start() is async, and shared() may be called on a runtime's thread,
        // where blocking on another runtime is not allowed.
        let result = std::thread::scope(|s| {
            s.spawn(|| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(io_err("building a runtime"))?;
                rt.block_on(ControlPlane::start())
            })
            .join()
        });
        match result {
            Ok(Ok(cp)) => {
                // SAFETY: registering a plain extern "C" fn is always sound.
                unsafe { libc::atexit(clean_up_shared) };
                Ok(cp)
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("starting the control plane panicked".to_owned()),
        }
    });
    match started {
        Ok(cp) => cp,
        Err(e) => panic!("starting the shared control plane: {e}"),
    }
}

/// clean_up_shared kills the shared control plane and removes its files when
/// the process exits normally; `PR_SET_PDEATHSIG` covers the other ways.
extern "C" fn clean_up_shared() {
    if let Some(Ok(cp)) = SHARED.get() {
        cp.kill_now();
        let _ = std::fs::remove_dir_all(cp.dir());
    }
}

fn client_for(url: &str, ca_der: &[Vec<u8>], token: &str) -> Result<kube::Client> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| Error::Other(format!("parsing {url}: {e}")))?;
    let mut config = kube::Config::new(uri);
    config.root_cert = Some(ca_der.to_vec());
    config.auth_info.token = Some(token.to_owned().into());
    config.default_namespace = "default".into();
    kube::Client::try_from(config).map_err(kube_err("building a client"))
}

/// read_ca reads the certificate bundle kube-apiserver generated: the serving
/// certificate followed by the CA that signed it.
fn read_ca(path: &Path) -> Result<(Vec<u8>, Vec<Vec<u8>>), String> {
    let pem_bytes = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let blocks =
        pem::parse_many(&pem_bytes).map_err(|e| format!("parsing {}: {e}", path.display()))?;
    let der: Vec<Vec<u8>> = blocks
        .iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .map(|b| b.contents().to_vec())
        .collect();
    if der.is_empty() {
        return Err(format!("{} holds no certificate yet", path.display()));
    }
    Ok((pem_bytes, der))
}

/// etcd_health asks etcd's `/health` endpoint whether it serves.
async fn etcd_health(port: u16) -> Result<(), String> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| format!("connecting to etcd: {e}"))?;
    stream
        .write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .map_err(|e| format!("asking etcd /health: {e}"))?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .await
        .map_err(|e| format!("reading etcd /health: {e}"))?;
    if answer.contains(r#""health":"true""#) {
        Ok(())
    } else {
        Err(format!("etcd /health answered {answer:?}"))
    }
}

async fn grant_cluster_role(client: &kube::Client) -> Result<()> {
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    let role = ClusterRole {
        metadata: meta(GATEWAY_ROLE),
        rules: Some(read_all_rules(&CLUSTER_RULES)?),
        ..ClusterRole::default()
    };
    Api::<ClusterRole>::all(client.clone())
        .patch(GATEWAY_ROLE, &pp, &Patch::Apply(&role))
        .await
        .map_err(kube_err(format!("creating ClusterRole {GATEWAY_ROLE}")))?;
    let binding = ClusterRoleBinding {
        metadata: meta(GATEWAY_ROLE),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name: GATEWAY_ROLE.into(),
        },
        subjects: Some(vec![gateway_subject()]),
    };
    Api::<ClusterRoleBinding>::all(client.clone())
        .patch(GATEWAY_ROLE, &pp, &Patch::Apply(&binding))
        .await
        .map_err(kube_err(format!(
            "creating ClusterRoleBinding {GATEWAY_ROLE}"
        )))?;
    Ok(())
}

fn gateway_subject() -> Subject {
    Subject {
        api_group: Some("rbac.authorization.k8s.io".into()),
        kind: "User".into(),
        name: Identity::Gateway.user_name().into(),
        namespace: None,
    }
}

fn meta(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        ..ObjectMeta::default()
    }
}

/// NAMESPACE_RULES are the chart's rule files that the gateway identity holds, as
/// one Role, in every test namespace: the chart's Role (RRs, Leases) and its reads
/// Role (owner resolution, `scope=managed`). The tests send signals about objects
/// in their own namespace, and some run with `GATEWAY_SCOPE=managed`.
const NAMESPACE_RULES: [&str; 3] = [
    "chart/files/role-rules.yaml",
    "chart/files/owner-rules.yaml",
    "chart/files/scope-rules.yaml",
];

/// CLUSTER_RULES are the chart's rule files that the gateway identity holds, as
/// one ClusterRole: the chart's ClusterRole (TokenReviews, SubjectAccessReviews)
/// and the `scope=managed` reads of cluster-scoped objects.
const CLUSTER_RULES: [&str; 2] = [
    "chart/files/clusterrole-rules.yaml",
    "chart/files/scope-cluster-rules.yaml",
];

/// read_all_rules reads the PolicyRules of every file in `files`, in order.
fn read_all_rules(files: &[&str]) -> Result<Vec<PolicyRule>> {
    let mut rules = Vec::new();
    for f in files {
        rules.extend(read_rules(f)?);
    }
    Ok(rules)
}

/// read_rules reads a YAML list of PolicyRules from the repository.
fn read_rules(relative: &str) -> Result<Vec<PolicyRule>> {
    let path = repo_root().join(relative);
    let text =
        std::fs::read_to_string(&path).map_err(io_err(format!("reading {}", path.display())))?;
    serde_yaml_ng::from_str(&text)
        .map_err(|e| Error::Other(format!("parsing {}: {e}", path.display())))
}

/// read_crd parses a CustomResourceDefinition from a YAML file.
pub fn read_crd(path: &Path) -> Result<CustomResourceDefinition> {
    let text =
        std::fs::read_to_string(path).map_err(io_err(format!("reading {}", path.display())))?;
    serde_yaml_ng::from_str(&text)
        .map_err(|e| Error::Other(format!("parsing {}: {e}", path.display())))
}

fn write(path: &Path, contents: &[u8]) -> Result<()> {
    std::fs::write(path, contents).map_err(io_err(format!("writing {}", path.display())))
}

/// wait_established waits, at most the readiness timeout, until CRD `name`
/// is established, and fails at once when its names are not accepted.
pub async fn wait_established(client: &kube::Client, name: &str) -> Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let current = api
            .get(name)
            .await
            .map_err(kube_err(format!("reading CRD {name}")))?;
        let conditions = current
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default();
        let established = conditions
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        if established {
            return Ok(());
        }
        if let Some(c) = conditions
            .iter()
            .find(|c| c.type_ == "NamesAccepted" && c.status == "False")
        {
            return Err(Error::Other(format!(
                "CRD {name} names not accepted: {}",
                c.message.as_deref().unwrap_or("")
            )));
        }
        if Instant::now() > deadline {
            return Err(Error::Other(format!(
                "CRD {name} not established after {READY_TIMEOUT:?}: {conditions:?}"
            )));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// wait_allowed waits, at most the readiness timeout, until the client's user
/// may `verb` `resource` in `namespace` (cluster-wide when empty): the RBAC
/// authorizer learns of new bindings through informers.
pub async fn wait_allowed(
    client: &kube::Client,
    namespace: &str,
    group: &str,
    resource: &str,
    verb: &str,
) -> Result<()> {
    let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                namespace: (!namespace.is_empty()).then(|| namespace.to_owned()),
                group: Some(group.to_owned()),
                resource: Some(resource.to_owned()),
                verb: Some(verb.to_owned()),
                ..ResourceAttributes::default()
            }),
            ..SelfSubjectAccessReviewSpec::default()
        },
        ..SelfSubjectAccessReview::default()
    };
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let answer = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(kube_err("reviewing access"))?;
        if answer.status.is_some_and(|s| s.allowed) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Error::Other(format!(
                "still may not {verb} {group}/{resource} in {namespace:?} after {READY_TIMEOUT:?}"
            )));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}
