//! Config is read once at start from the environment (envy, prefix `GATEWAY_`) into typed
//! fields, each unset one taking its value from one table of defaults (`Env::default`),
//! then validated in one place.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use serde::{Deserialize, de::DeserializeOwned};

mod eks;
pub use eks::Eks;

/// Config is the validated configuration of one gateway instance.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen_addr: SocketAddr,
    /// metrics_addr serves the instruments in the Prometheus text format; None is off.
    pub metrics_addr: Option<SocketAddr>,
    pub namespace: String,
    pub lock_namespace: String,
    pub distributed_locking: bool,
    pub lock_duration: Duration,
    /// sweep_min_age is how long a record must have been left alone before the sweep may
    /// delete it: longer than any writer may sit between its claim and its create.
    pub sweep_min_age: Duration,
    pub lock_wait: Duration,
    pub auth: AuthMode,
    pub cluster_id: Option<String>,
    /// replay_window bounds the age of the timestamp a replay or freshness check reads
    /// (`GATEWAY_REPLAY_WINDOW_SECONDS`); None (0) turns those checks off.
    pub replay_window: Option<Duration>,
    /// owner_resolution follows a Pod's (ReplicaSet's, Job's) controller owners to its workload.
    pub owner_resolution: bool,
    /// scope says which targets the gateway remediates.
    pub scope: Scope,
    pub max_body_bytes: usize,
    pub max_alerts: usize,
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub request_timeout: Duration,
    pub api_timeout: Duration,
    pub max_in_flight: usize,
    pub alert_concurrency: usize,
    pub log_format: LogFormat,
    pub shutdown_timeout: Duration,
    pub instance: String,
    pub chaos: Chaos,
    /// eks, when set, reaches an EKS cluster with tokens signed from AWS credentials
    /// instead of a kubeconfig (`GATEWAY_EKS_CLUSTER_NAME`, src/config/eks.rs).
    pub eks: Option<Eks>,
    /// tls serves HTTPS from these files; None is plain HTTP.
    pub tls: Option<TlsFiles>,
}

/// TlsFiles are the PEM files of TLS serving (`GATEWAY_TLS_*`), re-read when they change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// cert is the certificate chain, leaf first (`GATEWAY_TLS_CERT_FILE`).
    pub cert: PathBuf,
    /// key is the private key of the leaf (`GATEWAY_TLS_KEY_FILE`).
    pub key: PathBuf,
    /// client_ca is the CA bundle that client certificates are verified against
    /// (`GATEWAY_TLS_CLIENT_CA_FILE`); a verified certificate authenticates its sender.
    pub client_ca: Option<PathBuf>,
}

/// AuthMode says how callers of the signal endpoints are authenticated and authorized.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthMode {
    /// Bearer tokens are checked with a TokenReview for a dedicated audience, then the
    /// caller's permission with a SubjectAccessReview.
    TokenReview(Review),
    /// Bearer tokens must equal a shared secret.
    Bearer(SecretSource),
    /// No authentication (for local use and for meshes that authenticate).
    None,
    /// Only a client certificate verified against `GATEWAY_TLS_CLIENT_CA_FILE`.
    ClientCert,
}

/// Review is what `tokenreview` mode asks the API server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Review {
    /// audience the caller's token must have been issued for; None (`apiserver`) accepts
    /// any token the API server accepts for itself, as kubernaut's Gateway does.
    pub audience: Option<String>,
    /// group of the resource the caller must be allowed to `create` (empty: core).
    pub group: String,
    /// resource the caller must be allowed to `create`, in the gateway's namespace.
    pub resource: String,
    /// name of that resource, when the permission is on one object (kubernaut:
    /// `services/gateway-service`).
    pub name: Option<String>,
    /// cache_ttl bounds how long a decision is reused for one token.
    pub cache_ttl: Duration,
}

/// SecretSource is where the shared secret of `bearer` mode comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSource {
    /// File is a mounted Secret, re-read when it changes.
    File(PathBuf),
    /// Value is the secret itself (`GATEWAY_AUTH_TOKEN`), trimmed.
    Value(String),
}

/// Scope says which targets may get a RemediationRequest (`GATEWAY_SCOPE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Every target.
    #[default]
    All,
    /// Only targets kubernaut manages: labelled `kubernaut.ai/managed=true` on the
    /// resource, else on its namespace.
    Managed,
}

/// LogFormat selects JSON lines (default) or human-readable logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Json,
    Text,
}

/// PausePoint is a point of the write path where a chaos test can freeze a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PausePoint {
    /// Right after the record was claimed (the Lease is held).
    AfterLock,
    /// After every check, right before the RR create request.
    BeforeCreate,
    /// Right after the RR was created, before its first status write.
    AfterCreate,
}

/// Chaos holds the test-only switches; they are refused unless built with the `chaos` feature.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Chaos {
    pub pause_at: Option<PausePoint>,
    pub resume_file: Option<PathBuf>,
    pub disable_fencing: bool,
}

/// CHAOS_VARS are the variables of the chaos switches.
pub const CHAOS_VARS: [&str; 3] = [
    "GATEWAY_TEST_PAUSE_AT",
    "GATEWAY_TEST_RESUME_FILE",
    "GATEWAY_UNSAFE_DISABLE_FENCING",
];

/// ConfigError names the variable that is wrong and why.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {var}: {problem}")]
pub struct ConfigError {
    pub var: String,
    pub problem: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum AuthKind {
    Tokenreview,
    Bearer,
    None,
    Clientcert,
}

/// Env is the `GATEWAY_*` environment, typed; `Platform` holds the variables set by
/// Kubernetes and Knative. A variable that is not set takes its value from `Env::default`.
#[derive(Deserialize)]
#[serde(default)]
struct Env {
    listen_addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    namespace: Option<String>,
    lock_namespace: Option<String>,
    enable_distributed_locking: bool,
    lock_duration_seconds: u64,
    lock_wait_ms: u64,
    sweep_min_age_seconds: u64,
    api_timeout_ms: u64,
    auth: AuthKind,
    auth_token: Option<String>,
    auth_token_file: Option<PathBuf>,
    auth_audience: String,
    auth_resource: String,
    auth_resource_name: Option<String>,
    auth_cache_seconds: u64,
    cluster_id: Option<String>,
    replay_window_seconds: u64,
    owner_resolution: bool,
    scope: Scope,
    max_body_bytes: usize,
    max_in_flight: usize,
    max_alerts: usize,
    max_connections: usize,
    header_read_timeout_ms: u64,
    request_timeout_ms: u64,
    alert_concurrency: usize,
    log_format: LogFormat,
    shutdown_timeout_seconds: u64,
    test_pause_at: Option<PausePoint>,
    test_resume_file: Option<PathBuf>,
    unsafe_disable_fencing: bool,
    tls_cert_file: Option<PathBuf>,
    tls_key_file: Option<PathBuf>,
    tls_client_ca_file: Option<PathBuf>,
}

impl Default for Env {
    /// default is the table of defaults: the value of every variable that is not set.
    fn default() -> Env {
        Env {
            listen_addr: SocketAddr::from(([0, 0, 0, 0], 8080)),
            metrics_addr: None,
            namespace: None,
            lock_namespace: None,
            enable_distributed_locking: true,
            lock_duration_seconds: 30,
            lock_wait_ms: 5000,
            sweep_min_age_seconds: 3600,
            api_timeout_ms: 5000,
            auth: AuthKind::Tokenreview,
            auth_token: None,
            auth_token_file: None,
            auth_audience: "signal-gateway".into(),
            // A virtual resource of the gateway's own group: a sender's permission to send
            // is not a permission to create RemediationRequests itself.
            auth_resource: "signals.signal-gateway.kubernaut.ai".into(),
            auth_resource_name: None,
            auth_cache_seconds: 10,
            cluster_id: None,
            replay_window_seconds: crate::signal::REPLAY_WINDOW_DEFAULT.as_secs(),
            owner_resolution: true,
            scope: Scope::All,
            max_body_bytes: 256 * 1024,
            max_in_flight: 1024,
            max_alerts: crate::signal::MAX_ALERTS_DEFAULT,
            max_connections: 1024,
            header_read_timeout_ms: 10_000,
            request_timeout_ms: 60_000,
            alert_concurrency: 8,
            log_format: LogFormat::Json,
            shutdown_timeout_seconds: 20,
            test_pause_at: None,
            test_resume_file: None,
            unsafe_disable_fencing: false,
            tls_cert_file: None,
            tls_key_file: None,
            tls_client_ca_file: None,
        }
    }
}

#[derive(Deserialize)]
struct Platform {
    port: Option<u16>,
    pod_name: Option<String>,
    pod_namespace: Option<String>,
    hostname: Option<String>,
}

impl Config {
    /// from_env reads the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_vars_owned(std::env::vars().collect())
    }

    /// from_vars builds a Config from explicit pairs, as the environment would hold them.
    pub fn from_vars<'a>(
        vars: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Config, ConfigError> {
        Config::from_vars_owned(
            vars.into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        )
    }

    fn from_vars_owned(vars: Vec<(String, String)>) -> Result<Config, ConfigError> {
        // An empty value counts as unset, as Helm and Knative often render them.
        let vars: Vec<(String, String)> = vars
            .into_iter()
            .filter(|(_, v)| !v.trim().is_empty())
            .collect();
        let env: Env = typed(&vars, "GATEWAY_")?;
        let platform: Platform = typed(&vars, "")?;
        let eks = eks::eks(typed(&vars, "GATEWAY_EKS_")?, typed(&vars, "AWS_")?)?;
        Ok(Config {
            eks,
            ..validate(env, platform, cfg!(feature = "chaos"))?
        })
    }
}

/// typed deserializes the variables starting with `prefix`. envy's errors do not always
/// name the variable, so on failure each variable is tried alone to find the one at fault.
fn typed<T: DeserializeOwned>(vars: &[(String, String)], prefix: &str) -> Result<T, ConfigError> {
    let parse = |vars: Vec<(String, String)>| -> Result<T, envy::Error> {
        if prefix.is_empty() {
            envy::from_iter(vars)
        } else {
            envy::prefixed(prefix).from_iter(vars)
        }
    };
    parse(vars.to_vec()).map_err(|e| {
        let culprit = vars
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .find(|pair| parse(vec![(*pair).clone()]).is_err());
        match culprit {
            Some((k, v)) => problem(k, format!("cannot use '{v}': {e}")),
            None => problem(&format!("{prefix}*"), e.to_string()),
        }
    })
}

/// validate checks the typed environment and builds the Config from it.
fn validate(env: Env, platform: Platform, chaos_built: bool) -> Result<Config, ConfigError> {
    let mut listen_addr = env.listen_addr;
    if let Some(port) = platform.port {
        listen_addr.set_port(port);
    }
    let (namespace, lock_namespace) = namespaces(&env, platform.pod_namespace)?;
    check_lease_timing(&env)?;
    check_limits(&env)?;
    check_request_timing(&env)?;
    let auth = auth_mode(&env)?;
    let tls = tls_files(
        env.tls_cert_file.clone(),
        env.tls_key_file.clone(),
        env.tls_client_ca_file.clone(),
        &auth,
    )?;
    let chaos = chaos(&env, chaos_built)?;
    check_cluster_id_and_metrics_addr(&env, listen_addr)?;
    let instance = platform
        .pod_name
        .or(platform.hostname)
        .unwrap_or_else(|| "signal-gateway".into());
    Ok(Config {
        listen_addr,
        metrics_addr: env.metrics_addr,
        namespace,
        lock_namespace,
        distributed_locking: env.enable_distributed_locking,
        lock_duration: Duration::from_secs(env.lock_duration_seconds),
        sweep_min_age: Duration::from_secs(env.sweep_min_age_seconds),
        lock_wait: Duration::from_millis(env.lock_wait_ms),
        auth,
        cluster_id: env.cluster_id,
        replay_window: (env.replay_window_seconds > 0)
            .then(|| Duration::from_secs(env.replay_window_seconds)),
        owner_resolution: env.owner_resolution,
        scope: env.scope,
        max_body_bytes: env.max_body_bytes,
        max_alerts: env.max_alerts,
        max_connections: env.max_connections,
        header_read_timeout: Duration::from_millis(env.header_read_timeout_ms),
        request_timeout: Duration::from_millis(env.request_timeout_ms),
        api_timeout: Duration::from_millis(env.api_timeout_ms),
        max_in_flight: env.max_in_flight,
        alert_concurrency: env.alert_concurrency,
        log_format: env.log_format,
        shutdown_timeout: Duration::from_secs(env.shutdown_timeout_seconds),
        instance,
        chaos,
        eks: None,
        tls,
    })
}

/// namespaces are the namespace of the RRs (`GATEWAY_NAMESPACE`, else `pod_namespace`)
/// and of the fence records (`GATEWAY_LOCK_NAMESPACE`, else the first).
fn namespaces(env: &Env, pod_namespace: Option<String>) -> Result<(String, String), ConfigError> {
    let namespace = env.namespace.clone().or(pod_namespace).ok_or_else(|| {
        problem(
            "GATEWAY_NAMESPACE",
            "not set, and POD_NAMESPACE is not set either".into(),
        )
    })?;
    check_dns_label("GATEWAY_NAMESPACE", &namespace)?;
    let lock_namespace = env
        .lock_namespace
        .clone()
        .unwrap_or_else(|| namespace.clone());
    check_dns_label("GATEWAY_LOCK_NAMESPACE", &lock_namespace)?;
    Ok((namespace, lock_namespace))
}

/// check_lease_timing checks the lease duration, the sweep's minimum age, the lock wait and
/// the API timeout, and that a write fits inside a lease.
fn check_lease_timing(env: &Env) -> Result<(), ConfigError> {
    in_range(
        "GATEWAY_LOCK_DURATION_SECONDS",
        env.lock_duration_seconds,
        1,
        900,
    )?;
    // At least four lock durations: a create the API server applies after our timeout
    // still lands long before the sweep may judge its record.
    in_range(
        "GATEWAY_SWEEP_MIN_AGE_SECONDS",
        env.sweep_min_age_seconds,
        env.lock_duration_seconds * 4,
        7 * 24 * 3600,
    )?;
    in_range("GATEWAY_LOCK_WAIT_MS", env.lock_wait_ms, 0, 60_000)?;
    in_range("GATEWAY_API_TIMEOUT_MS", env.api_timeout_ms, 1, 60_000)?;
    if env.api_timeout_ms >= env.lock_duration_seconds * 1000 {
        return Err(problem(
            "GATEWAY_API_TIMEOUT_MS",
            "must be shorter than GATEWAY_LOCK_DURATION_SECONDS, or no write could finish inside a lease".into(),
        ));
    }
    Ok(())
}

/// check_limits checks that every size and count limit is at least 1.
fn check_limits(env: &Env) -> Result<(), ConfigError> {
    for (var, v) in [
        ("GATEWAY_MAX_BODY_BYTES", env.max_body_bytes),
        ("GATEWAY_MAX_IN_FLIGHT", env.max_in_flight),
        ("GATEWAY_ALERT_CONCURRENCY", env.alert_concurrency),
        ("GATEWAY_MAX_ALERTS", env.max_alerts),
        ("GATEWAY_MAX_CONNECTIONS", env.max_connections),
    ] {
        in_range(var, v as u64, 1, u64::MAX)?;
    }
    Ok(())
}

/// check_request_timing checks the header read timeout, the replay window and the request
/// timeout, and that a request can outlast a lock wait.
fn check_request_timing(env: &Env) -> Result<(), ConfigError> {
    in_range(
        "GATEWAY_HEADER_READ_TIMEOUT_MS",
        env.header_read_timeout_ms,
        100,
        300_000,
    )?;
    // A day at most: a larger value is more likely milliseconds than a window.
    in_range(
        "GATEWAY_REPLAY_WINDOW_SECONDS",
        env.replay_window_seconds,
        0,
        86_400,
    )?;
    in_range(
        "GATEWAY_REQUEST_TIMEOUT_MS",
        env.request_timeout_ms,
        1000,
        600_000,
    )?;
    if env.request_timeout_ms <= env.lock_wait_ms {
        return Err(problem(
            "GATEWAY_REQUEST_TIMEOUT_MS",
            "must be longer than GATEWAY_LOCK_WAIT_MS, or a request waiting for a lock would always time out".into(),
        ));
    }
    Ok(())
}

/// auth_mode reads `GATEWAY_AUTH` and the variables of the mode it names.
fn auth_mode(env: &Env) -> Result<AuthMode, ConfigError> {
    Ok(match env.auth {
        AuthKind::Tokenreview => AuthMode::TokenReview(review(
            &env.auth_audience,
            &env.auth_resource,
            env.auth_resource_name.as_deref(),
            env.auth_cache_seconds,
        )?),
        AuthKind::None => AuthMode::None,
        AuthKind::Bearer => AuthMode::Bearer(secret_source(
            env.auth_token.clone(),
            env.auth_token_file.clone(),
        )?),
        AuthKind::Clientcert => AuthMode::ClientCert,
    })
}

/// chaos reads the chaos switches, refused unless `chaos_built`.
fn chaos(env: &Env, chaos_built: bool) -> Result<Chaos, ConfigError> {
    let chaos = Chaos {
        pause_at: env.test_pause_at,
        resume_file: env.test_resume_file.clone(),
        disable_fencing: env.unsafe_disable_fencing,
    };
    if !chaos_built {
        let set = [
            chaos.pause_at.is_some(),
            chaos.resume_file.is_some(),
            chaos.disable_fencing,
        ];
        if let Some((var, _)) = CHAOS_VARS.iter().zip(set).find(|(_, set)| *set) {
            return Err(problem(
                var,
                "is a chaos-test switch; this binary was built without the `chaos` feature".into(),
            ));
        }
    }
    if chaos.pause_at.is_some() && chaos.resume_file.is_none() {
        return Err(problem(
            "GATEWAY_TEST_RESUME_FILE",
            "required when GATEWAY_TEST_PAUSE_AT is set".into(),
        ));
    }
    Ok(chaos)
}

/// check_cluster_id_and_metrics_addr checks the cluster id's length and that the metrics
/// endpoint has a port of its own.
fn check_cluster_id_and_metrics_addr(
    env: &Env,
    listen_addr: SocketAddr,
) -> Result<(), ConfigError> {
    if env.cluster_id.as_ref().is_some_and(|c| c.len() > 253) {
        return Err(problem(
            "GATEWAY_CLUSTER_ID",
            "is longer than 253 characters, the limit of kubernaut's spec.clusterID".into(),
        ));
    }
    if env
        .metrics_addr
        .is_some_and(|m| m == listen_addr && m.port() != 0)
    {
        return Err(problem(
            "GATEWAY_METRICS_ADDR",
            "must differ from the listen address".into(),
        ));
    }
    Ok(())
}

/// tls_files checks the TLS variables together (a certificate needs its key, a client CA
/// needs both, `clientcert` needs a client CA) and that the files load now.
fn tls_files(
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    client_ca: Option<PathBuf>,
    auth: &AuthMode,
) -> Result<Option<TlsFiles>, ConfigError> {
    let files = match (cert, key) {
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert,
            key,
            client_ca,
        }),
        (Some(_), None) => {
            return Err(problem(
                "GATEWAY_TLS_KEY_FILE",
                "required when GATEWAY_TLS_CERT_FILE is set".into(),
            ));
        }
        (None, Some(_)) => {
            return Err(problem(
                "GATEWAY_TLS_CERT_FILE",
                "required when GATEWAY_TLS_KEY_FILE is set".into(),
            ));
        }
        (None, None) if client_ca.is_some() => {
            return Err(problem(
                "GATEWAY_TLS_CLIENT_CA_FILE",
                "client certificates need TLS: set GATEWAY_TLS_CERT_FILE and GATEWAY_TLS_KEY_FILE"
                    .into(),
            ));
        }
        (None, None) => None,
    };
    let has_ca = files.as_ref().is_some_and(|f| f.client_ca.is_some());
    match auth {
        AuthMode::ClientCert if !has_ca => {
            return Err(problem(
                "GATEWAY_AUTH",
                "clientcert needs GATEWAY_TLS_CLIENT_CA_FILE (and GATEWAY_TLS_CERT_FILE, GATEWAY_TLS_KEY_FILE)".into(),
            ));
        }
        // A client CA adds a way in; `none` has no way to add it to.
        AuthMode::None if has_ca => {
            return Err(problem(
                "GATEWAY_TLS_CLIENT_CA_FILE",
                "GATEWAY_AUTH=none lets every caller in; set GATEWAY_AUTH=clientcert to require client certificates".into(),
            ));
        }
        _ => {}
    }
    if let Some(files) = &files {
        crate::web::check_tls(files)
            .map_err(|e: crate::web::TlsLoadError| problem(e.var, e.problem))?;
    }
    Ok(files)
}

/// AUDIENCE_APISERVER is the `GATEWAY_AUTH_AUDIENCE` that asks for no audience of the gateway's own.
const AUDIENCE_APISERVER: &str = "apiserver";

/// review reads the audience, resource and cache time of `tokenreview` mode.
fn review(
    audience: &str,
    resource: &str,
    name: Option<&str>,
    cache_seconds: u64,
) -> Result<Review, ConfigError> {
    const VAR: &str = "GATEWAY_AUTH_RESOURCE";
    let audience = audience.trim();
    if audience.is_empty() || audience.len() > 253 {
        return Err(problem(
            "GATEWAY_AUTH_AUDIENCE",
            "must be 1 to 253 characters".into(),
        ));
    }
    let name = name.map(str::trim);
    if let Some(name) = name
        && !crate::signal::is_object_name(name)
    {
        return Err(problem(
            "GATEWAY_AUTH_RESOURCE_NAME",
            format!("'{name}' is not a valid object name (a DNS-1123 subdomain)"),
        ));
    }
    in_range("GATEWAY_AUTH_CACHE_SECONDS", cache_seconds, 0, 300)?;
    let spec = resource.trim();
    if spec.contains('/') {
        return Err(problem(
            VAR,
            format!("'{spec}' names a subresource; give `resource.group` or `resource`"),
        ));
    }
    let (resource, group) = spec.split_once('.').unwrap_or((spec, ""));
    let group_ok = group.is_empty() || group.split('.').all(crate::signal::is_dns1123_label);
    if !crate::signal::is_dns1123_label(resource) || !group_ok {
        return Err(problem(
            VAR,
            format!("'{spec}' is not `resource.group` (e.g. remediationrequests.kubernaut.ai)"),
        ));
    }
    Ok(Review {
        audience: (audience != AUDIENCE_APISERVER).then(|| audience.to_owned()),
        group: group.to_owned(),
        resource: resource.to_owned(),
        name: name.map(str::to_owned),
        cache_ttl: Duration::from_secs(cache_seconds),
    })
}

/// secret_source picks the shared secret of `bearer` mode; an empty secret refuses to start.
fn secret_source(
    value: Option<String>,
    file: Option<PathBuf>,
) -> Result<SecretSource, ConfigError> {
    match (value, file) {
        (Some(_), Some(_)) => Err(problem(
            "GATEWAY_AUTH_TOKEN",
            "set either GATEWAY_AUTH_TOKEN or GATEWAY_AUTH_TOKEN_FILE, not both".into(),
        )),
        (None, None) => Err(problem(
            "GATEWAY_AUTH_TOKEN_FILE",
            "required when GATEWAY_AUTH=bearer (or GATEWAY_AUTH_TOKEN)".into(),
        )),
        (Some(v), None) => Ok(SecretSource::Value(v.trim().to_owned())),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(&path).map_err(|e| {
                problem(
                    "GATEWAY_AUTH_TOKEN_FILE",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            if text.trim().is_empty() {
                return Err(problem(
                    "GATEWAY_AUTH_TOKEN_FILE",
                    format!("{} is empty", path.display()),
                ));
            }
            Ok(SecretSource::File(path))
        }
    }
}

fn problem(var: &str, problem: String) -> ConfigError {
    ConfigError {
        var: var.to_owned(),
        problem,
    }
}

fn in_range(var: &str, v: u64, min: u64, max: u64) -> Result<(), ConfigError> {
    if (min..=max).contains(&v) {
        Ok(())
    } else if max == u64::MAX {
        Err(problem(var, format!("must be at least {min}")))
    } else {
        Err(problem(var, format!("must be between {min} and {max}")))
    }
}

fn check_dns_label(var: &str, value: &str) -> Result<(), ConfigError> {
    if crate::signal::is_dns1123_label(value) {
        Ok(())
    } else {
        Err(problem(
            var,
            format!("'{value}' is not a valid namespace name"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_design() {
        let c = Config::from_vars([("POD_NAMESPACE", "ops"), ("POD_NAME", "gw-1")]).unwrap();
        assert_eq!(c.listen_addr, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(c.namespace, "ops");
        assert_eq!(c.lock_namespace, "ops");
        assert!(c.distributed_locking);
        assert!(c.owner_resolution);
        assert_eq!(c.scope, Scope::All);
        assert!(!c.chaos.disable_fencing);
        assert_eq!(c.lock_duration, Duration::from_secs(30));
        let d = Env::default();
        assert_eq!(c.lock_wait, Duration::from_millis(d.lock_wait_ms));
        assert_eq!(
            c.auth,
            AuthMode::TokenReview(Review {
                audience: Some("signal-gateway".into()),
                group: "signal-gateway.kubernaut.ai".into(),
                resource: "signals".into(),
                name: None,
                cache_ttl: Duration::from_secs(d.auth_cache_seconds),
            })
        );
        assert_eq!(c.max_alerts, crate::signal::MAX_ALERTS_DEFAULT);
        assert_eq!(
            c.header_read_timeout,
            Duration::from_millis(d.header_read_timeout_ms)
        );
        assert_eq!(c.max_body_bytes, d.max_body_bytes);
        assert_eq!(c.instance, "gw-1");
        assert_eq!(c.log_format, LogFormat::Json);
    }

    #[test]
    fn knative_port_overrides_the_listen_port() {
        let c = Config::from_vars([
            ("GATEWAY_NAMESPACE", "a"),
            ("GATEWAY_LISTEN_ADDR", "127.0.0.1:9000"),
            ("PORT", "8081"),
        ])
        .unwrap();
        assert_eq!(c.listen_addr, "127.0.0.1:8081".parse().unwrap());
    }

    #[test]
    fn empty_values_count_as_unset() {
        let c = Config::from_vars([
            ("GATEWAY_NAMESPACE", "a"),
            ("GATEWAY_CLUSTER_ID", ""),
            ("GATEWAY_LOCK_DURATION_SECONDS", " "),
        ])
        .unwrap();
        assert_eq!(c.cluster_id, None);
        assert_eq!(
            c.lock_duration,
            Duration::from_secs(Env::default().lock_duration_seconds)
        );
    }

    /// BAD_VALUES are environments, each with the variable its error must name.
    const BAD_VALUES: &[(&[(&str, &str)], &str)] = &[
        (&[], "GATEWAY_NAMESPACE"),
        (&[("GATEWAY_NAMESPACE", "Bad_NS")], "GATEWAY_NAMESPACE"),
        (
            &[("GATEWAY_NAMESPACE", "a"), ("GATEWAY_LOCK_NAMESPACE", "-x")],
            "GATEWAY_LOCK_NAMESPACE",
        ),
        (
            &[
                ("GATEWAY_NAMESPACE", "a"),
                ("GATEWAY_LOCK_DURATION_SECONDS", "abc"),
            ],
            "GATEWAY_LOCK_DURATION_SECONDS",
        ),
        (
            &[
                ("GATEWAY_NAMESPACE", "a"),
                ("GATEWAY_LOCK_DURATION_SECONDS", "0"),
            ],
            "GATEWAY_LOCK_DURATION_SECONDS",
        ),
        (
            &[
                ("GATEWAY_NAMESPACE", "a"),
                ("GATEWAY_ENABLE_DISTRIBUTED_LOCKING", "yes"),
            ],
            "GATEWAY_ENABLE_DISTRIBUTED_LOCKING",
        ),
        (
            &[("GATEWAY_NAMESPACE", "a"), ("GATEWAY_AUTH", "magic")],
            "GATEWAY_AUTH",
        ),
        (
            &[("GATEWAY_NAMESPACE", "a"), ("GATEWAY_LISTEN_ADDR", "here")],
            "GATEWAY_LISTEN_ADDR",
        ),
        (
            &[("GATEWAY_NAMESPACE", "a"), ("GATEWAY_LOG_FORMAT", "xml")],
            "GATEWAY_LOG_FORMAT",
        ),
        (
            &[("GATEWAY_NAMESPACE", "a"), ("GATEWAY_AUTH", "bearer")],
            "GATEWAY_AUTH_TOKEN_FILE",
        ),
        (
            &[
                ("GATEWAY_NAMESPACE", "a"),
                ("GATEWAY_AUTH", "bearer"),
                ("GATEWAY_AUTH_TOKEN_FILE", "/nonexistent/token"),
            ],
            "GATEWAY_AUTH_TOKEN_FILE",
        ),
        (
            &[
                ("GATEWAY_NAMESPACE", "a"),
                ("GATEWAY_AUTH_RESOURCE", "remediationrequests/status"),
            ],
            "GATEWAY_AUTH_RESOURCE",
        ),
        (
            &[("GATEWAY_NAMESPACE", "a"), ("GATEWAY_AUTH_RESOURCE", "Bad")],
            "GATEWAY_AUTH_RESOURCE",
        ),
        (
            &[("GATEWAY_NAMESPACE", "a"), ("GATEWAY_MAX_ALERTS", "0")],
            "GATEWAY_MAX_ALERTS",
        ),
        (
            &[
                ("GATEWAY_NAMESPACE", "a"),
                ("GATEWAY_LOCK_DURATION_SECONDS", "60"),
                ("GATEWAY_SWEEP_MIN_AGE_SECONDS", "200"),
            ],
            "GATEWAY_SWEEP_MIN_AGE_SECONDS",
        ),
        (
            &[
                ("GATEWAY_NAMESPACE", "a"),
                ("GATEWAY_REQUEST_TIMEOUT_MS", "4000"),
            ],
            "GATEWAY_REQUEST_TIMEOUT_MS",
        ),
        (
            &[
                ("GATEWAY_NAMESPACE", "a"),
                ("GATEWAY_API_TIMEOUT_MS", "30000"),
            ],
            "GATEWAY_API_TIMEOUT_MS",
        ),
        (
            &[("GATEWAY_NAMESPACE", "a"), ("GATEWAY_MAX_IN_FLIGHT", "0")],
            "GATEWAY_MAX_IN_FLIGHT",
        ),
        (&[("GATEWAY_NAMESPACE", "a"), ("PORT", "99999")], "PORT"),
    ];

    #[test]
    fn bad_values_name_their_variable() {
        for (vars, var) in BAD_VALUES {
            let err = Config::from_vars(vars.iter().copied()).unwrap_err();
            assert_eq!(err.var, *var, "{err}");
            assert!(err.to_string().contains(var), "{err}");
        }
    }

    #[test]
    fn bearer_secrets_are_trimmed_and_an_empty_file_refuses_to_start() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "\n  \n").unwrap();
        let path = file.to_str().unwrap();
        let vars = [
            ("GATEWAY_NAMESPACE", "a"),
            ("GATEWAY_AUTH", "bearer"),
            ("GATEWAY_AUTH_TOKEN_FILE", path),
        ];
        let err = Config::from_vars(vars).unwrap_err();
        assert_eq!(err.var, "GATEWAY_AUTH_TOKEN_FILE", "{err}");
        assert!(err.problem.contains("empty"), "{err}");
        std::fs::write(&file, "s3cret\n").unwrap();
        let c = Config::from_vars(vars).unwrap();
        assert_eq!(c.auth, AuthMode::Bearer(SecretSource::File(file.clone())));
        let c = Config::from_vars([
            ("GATEWAY_NAMESPACE", "a"),
            ("GATEWAY_AUTH", "bearer"),
            ("GATEWAY_AUTH_TOKEN", "s3cret\n"),
        ])
        .unwrap();
        assert_eq!(
            c.auth,
            AuthMode::Bearer(SecretSource::Value("s3cret".into()))
        );
    }

    #[test]
    fn the_authorized_resource_is_configurable() {
        let c = Config::from_vars([
            ("GATEWAY_NAMESPACE", "a"),
            ("GATEWAY_AUTH_RESOURCE", "signals.gateway.example.com"),
            ("GATEWAY_AUTH_AUDIENCE", "alerts"),
        ])
        .unwrap();
        let AuthMode::TokenReview(r) = c.auth else {
            panic!("tokenreview is the default")
        };
        assert_eq!(
            (r.resource.as_str(), r.group.as_str(), r.audience.as_deref()),
            ("signals", "gateway.example.com", Some("alerts"))
        );
        assert_eq!(r.name, None);
    }

    #[test]
    fn kubernauts_sender_permission_maps_onto_ours() {
        // kubernaut's Gateway: a TokenReview without audiences, then may the caller
        // `create services/gateway-service` in the gateway's namespace?
        let c = Config::from_vars([
            ("GATEWAY_NAMESPACE", "kubernaut-system"),
            ("GATEWAY_AUTH_AUDIENCE", "apiserver"),
            ("GATEWAY_AUTH_RESOURCE", "services"),
            ("GATEWAY_AUTH_RESOURCE_NAME", "gateway-service"),
        ])
        .unwrap();
        let AuthMode::TokenReview(r) = c.auth else {
            panic!("tokenreview is the default")
        };
        assert_eq!(r.audience, None);
        assert_eq!((r.group.as_str(), r.resource.as_str()), ("", "services"));
        assert_eq!(r.name.as_deref(), Some("gateway-service"));
        let e = Config::from_vars([
            ("GATEWAY_NAMESPACE", "a"),
            ("GATEWAY_AUTH_RESOURCE_NAME", "Gateway_Service"),
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("GATEWAY_AUTH_RESOURCE_NAME"), "{e}");
    }

    #[test]
    fn the_metrics_endpoint_is_off_unless_set() {
        let c = Config::from_vars([("GATEWAY_NAMESPACE", "a")]).unwrap();
        assert_eq!(c.metrics_addr, None);
        let c = Config::from_vars([
            ("GATEWAY_NAMESPACE", "a"),
            ("GATEWAY_METRICS_ADDR", "0.0.0.0:9090"),
        ])
        .unwrap();
        assert_eq!(c.metrics_addr, Some("0.0.0.0:9090".parse().unwrap()));
        for bad in ["nine", "0.0.0.0:8080"] {
            let err =
                Config::from_vars([("GATEWAY_NAMESPACE", "a"), ("GATEWAY_METRICS_ADDR", bad)])
                    .unwrap_err();
            assert_eq!(err.var, "GATEWAY_METRICS_ADDR", "{err}");
        }
    }

    #[test]
    fn owner_resolution_and_scope_are_switches() {
        let c = Config::from_vars([
            ("POD_NAMESPACE", "ops"),
            ("GATEWAY_OWNER_RESOLUTION", "false"),
            ("GATEWAY_SCOPE", "managed"),
        ])
        .unwrap();
        assert!(!c.owner_resolution);
        assert_eq!(c.scope, Scope::Managed);
        let e = Config::from_vars([("POD_NAMESPACE", "ops"), ("GATEWAY_SCOPE", "some")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("GATEWAY_SCOPE"), "{e}");
    }

    #[test]
    fn the_replay_window_defaults_to_kubernauts_and_zero_turns_it_off() {
        let c = Config::from_vars([("POD_NAMESPACE", "ops")]).unwrap();
        assert_eq!(c.replay_window, Some(Duration::from_secs(300)));
        let c = Config::from_vars([
            ("POD_NAMESPACE", "ops"),
            ("GATEWAY_REPLAY_WINDOW_SECONDS", "0"),
        ])
        .unwrap();
        assert_eq!(c.replay_window, None);
        let c = Config::from_vars([
            ("POD_NAMESPACE", "ops"),
            ("GATEWAY_REPLAY_WINDOW_SECONDS", "86400"),
        ])
        .unwrap();
        assert_eq!(c.replay_window, Some(Duration::from_secs(86_400)));
        for bad in ["300000", "-1", "5m"] {
            let e = Config::from_vars([
                ("POD_NAMESPACE", "ops"),
                ("GATEWAY_REPLAY_WINDOW_SECONDS", bad),
            ])
            .unwrap_err();
            assert_eq!(e.var, "GATEWAY_REPLAY_WINDOW_SECONDS", "{bad}: {e}");
        }
    }

    #[test]
    fn rollback_switch_turns_locking_off() {
        let c = Config::from_vars([
            ("GATEWAY_NAMESPACE", "a"),
            ("GATEWAY_ENABLE_DISTRIBUTED_LOCKING", "false"),
        ])
        .unwrap();
        assert!(!c.distributed_locking);
    }

    /// tls_fixture writes a certificate, its key and a CA bundle into a new directory and
    /// returns their paths and the path of a file that does not exist.
    fn tls_fixture() -> (tempfile::TempDir, [String; 4]) {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let write = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p.to_str().unwrap().to_owned()
        };
        let files = [
            write("tls.crt", &cert.pem()),
            write("tls.key", &key.serialize_pem()),
            write("ca.crt", &cert.pem()),
            dir.path().join("nope.pem").to_str().unwrap().to_owned(),
        ];
        (dir, files)
    }

    /// with_namespace is the Config of `extra` and a namespace.
    fn with_namespace(extra: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_vars(
            [("GATEWAY_NAMESPACE", "a")]
                .into_iter()
                .chain(extra.iter().copied()),
        )
    }

    #[test]
    fn tls_needs_a_certificate_and_its_key_and_client_certificates_need_tls() {
        let (_dir, [crt, k, ca, _]) = tls_fixture();
        let with = with_namespace;
        assert_eq!(with(&[]).unwrap().tls, None);
        let c = with(&[
            ("GATEWAY_TLS_CERT_FILE", crt.as_str()),
            ("GATEWAY_TLS_KEY_FILE", k.as_str()),
        ])
        .unwrap();
        assert_eq!(
            c.tls,
            Some(TlsFiles {
                cert: crt.clone().into(),
                key: k.clone().into(),
                client_ca: None
            })
        );
        let both = [
            ("GATEWAY_TLS_CERT_FILE", crt.as_str()),
            ("GATEWAY_TLS_KEY_FILE", k.as_str()),
        ];
        let ca_var = ("GATEWAY_TLS_CLIENT_CA_FILE", ca.as_str());
        // A client CA beside tokenreview (the default) and bearer, or alone in clientcert.
        let c = with(&[both[0], both[1], ca_var]).unwrap();
        assert_eq!(c.tls.unwrap().client_ca, Some(ca.clone().into()));
        let c = with(&[both[0], both[1], ca_var, ("GATEWAY_AUTH", "clientcert")]).unwrap();
        assert_eq!(c.auth, AuthMode::ClientCert);
    }

    #[test]
    fn tls_refusals_name_their_variable() {
        let (_dir, [crt, k, ca, missing]) = tls_fixture();
        let missing = missing.as_str();
        let both = [
            ("GATEWAY_TLS_CERT_FILE", crt.as_str()),
            ("GATEWAY_TLS_KEY_FILE", k.as_str()),
        ];
        let ca_var = ("GATEWAY_TLS_CLIENT_CA_FILE", ca.as_str());
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);
        let cases: &[Case<'_>] = &[
            (&[both[0]], "GATEWAY_TLS_KEY_FILE", "required"),
            (&[both[1]], "GATEWAY_TLS_CERT_FILE", "required"),
            (&[ca_var], "GATEWAY_TLS_CLIENT_CA_FILE", "need TLS"),
            (
                &[both[0], both[1], ("GATEWAY_AUTH", "clientcert")],
                "GATEWAY_AUTH",
                "GATEWAY_TLS_CLIENT_CA_FILE",
            ),
            (
                &[both[0], both[1], ca_var, ("GATEWAY_AUTH", "none")],
                "GATEWAY_TLS_CLIENT_CA_FILE",
                "clientcert",
            ),
            (
                &[("GATEWAY_TLS_CERT_FILE", missing), both[1]],
                "GATEWAY_TLS_CERT_FILE",
                missing,
            ),
            (
                &[both[0], ("GATEWAY_TLS_KEY_FILE", crt.as_str())],
                "GATEWAY_TLS_KEY_FILE",
                "no PEM private key",
            ),
            (
                &[both[0], both[1], ("GATEWAY_TLS_CLIENT_CA_FILE", k.as_str())],
                "GATEWAY_TLS_CLIENT_CA_FILE",
                "no PEM certificate",
            ),
        ];
        for (vars, var, says) in cases {
            let err = with_namespace(vars).unwrap_err();
            assert_eq!(err.var, **var, "{vars:?}: {err}");
            assert!(err.to_string().contains(says), "{vars:?}: {err}");
        }
    }

    fn parts(vars: &[(&str, &str)]) -> (Env, Platform) {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        (typed(&vars, "GATEWAY_").unwrap(), typed(&vars, "").unwrap())
    }

    #[test]
    fn chaos_switches_are_refused_without_the_feature_naming_the_variable() {
        for (var, value) in [
            ("GATEWAY_TEST_PAUSE_AT", "before-create"),
            ("GATEWAY_TEST_RESUME_FILE", "/tmp/x"),
            ("GATEWAY_UNSAFE_DISABLE_FENCING", "true"),
        ] {
            let (env, platform) = parts(&[("GATEWAY_NAMESPACE", "a"), (var, value)]);
            let err = validate(env, platform, false).unwrap_err();
            assert_eq!(err.var, var, "{err}");
            assert!(err.problem.contains("chaos"), "{err}");
        }
        let (env, platform) = parts(&[
            ("GATEWAY_NAMESPACE", "a"),
            ("GATEWAY_TEST_PAUSE_AT", "after-lock"),
            ("GATEWAY_TEST_RESUME_FILE", "/tmp/x"),
            ("GATEWAY_UNSAFE_DISABLE_FENCING", "true"),
        ]);
        let c = validate(env, platform, true).unwrap();
        assert_eq!(c.chaos.pause_at, Some(PausePoint::AfterLock));
        assert!(c.chaos.disable_fencing);
    }
}
