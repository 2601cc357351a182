//! Config is read once at start from `GATEWAY_*` variables (envy) and validated.

use std::{net::SocketAddr, str::FromStr, time::Duration};

use serde::Deserialize;

/// Config is the validated configuration of one gateway instance.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen_addr: SocketAddr,
    pub namespace: String,
    pub lock_namespace: String,
    pub distributed_locking: bool,
    pub lock_duration: Duration,
    pub lock_wait: Duration,
    pub auth: AuthMode,
    pub cluster_id: Option<String>,
    pub max_body_bytes: usize,
    pub api_timeout: Duration,
    pub max_in_flight: usize,
    pub alert_concurrency: usize,
    pub log_format: LogFormat,
    pub shutdown_timeout: Duration,
    pub instance: String,
    pub fencing: bool,
}

/// AuthMode says how callers of the signal endpoints are authenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthMode {
    /// Bearer tokens are checked with a TokenReview against the API server.
    TokenReview,
    /// Bearer tokens must equal a shared secret.
    Bearer(String),
    /// No authentication (for local use and for meshes that authenticate).
    None,
}

/// LogFormat selects JSON lines (default) or human-readable logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

/// ConfigError names the variable that is wrong and why.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {var}: {problem}")]
pub struct ConfigError {
    pub var: &'static str,
    pub problem: String,
}

#[derive(Deserialize, Default)]
struct Raw {
    listen_addr: Option<String>,
    namespace: Option<String>,
    lock_namespace: Option<String>,
    enable_distributed_locking: Option<String>,
    lock_duration_seconds: Option<String>,
    lock_wait_ms: Option<String>,
    auth: Option<String>,
    auth_token: Option<String>,
    cluster_id: Option<String>,
    max_body_bytes: Option<String>,
    api_timeout_ms: Option<String>,
    max_in_flight: Option<String>,
    alert_concurrency: Option<String>,
    log_format: Option<String>,
    shutdown_timeout_seconds: Option<String>,
    unsafe_disable_fencing: Option<String>,
}

#[derive(Deserialize, Default)]
struct Platform {
    port: Option<String>,
    pod_name: Option<String>,
    pod_namespace: Option<String>,
    hostname: Option<String>,
}

impl Config {
    /// from_env reads the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        let raw: Raw = envy::prefixed("GATEWAY_")
            .from_env()
            .map_err(|e| ConfigError {
                var: "GATEWAY_*",
                problem: e.to_string(),
            })?;
        let platform: Platform = envy::from_env().map_err(|e| ConfigError {
            var: "PORT/POD_*",
            problem: e.to_string(),
        })?;
        Config::from_parts(raw, platform)
    }

    /// from_vars builds a Config from explicit pairs, as the environment would hold them.
    pub fn from_vars<'a>(
        vars: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Config, ConfigError> {
        let vars: Vec<(String, String)> = vars
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let raw: Raw = envy::prefixed("GATEWAY_")
            .from_iter(vars.clone())
            .map_err(|e| ConfigError {
                var: "GATEWAY_*",
                problem: e.to_string(),
            })?;
        let platform: Platform = envy::from_iter(vars).map_err(|e| ConfigError {
            var: "PORT/POD_*",
            problem: e.to_string(),
        })?;
        Config::from_parts(raw, platform)
    }

    fn from_parts(raw: Raw, platform: Platform) -> Result<Config, ConfigError> {
        let mut listen_addr: SocketAddr = parse(
            "GATEWAY_LISTEN_ADDR",
            raw.listen_addr,
            "0.0.0.0:8080".parse().ok(),
        )?;
        if let Some(port) = platform.port.filter(|p| !p.is_empty()) {
            listen_addr.set_port(parse_value("PORT", &port)?);
        }
        let namespace = nonempty(raw.namespace)
            .or(nonempty(platform.pod_namespace))
            .ok_or_else(|| ConfigError {
                var: "GATEWAY_NAMESPACE",
                problem: "not set, and POD_NAMESPACE is not set either".into(),
            })?;
        check_dns_label("GATEWAY_NAMESPACE", &namespace)?;
        let lock_namespace = nonempty(raw.lock_namespace).unwrap_or_else(|| namespace.clone());
        check_dns_label("GATEWAY_LOCK_NAMESPACE", &lock_namespace)?;

        let lock_duration_secs: u64 = parse(
            "GATEWAY_LOCK_DURATION_SECONDS",
            raw.lock_duration_seconds,
            Some(30),
        )?;
        if !(1..=3600).contains(&lock_duration_secs) {
            return Err(problem(
                "GATEWAY_LOCK_DURATION_SECONDS",
                "must be between 1 and 3600",
            ));
        }
        let lock_wait_ms: u64 = parse("GATEWAY_LOCK_WAIT_MS", raw.lock_wait_ms, Some(5000))?;
        if lock_wait_ms > 60_000 {
            return Err(problem("GATEWAY_LOCK_WAIT_MS", "must be at most 60000"));
        }
        let api_timeout_ms: u64 = parse("GATEWAY_API_TIMEOUT_MS", raw.api_timeout_ms, Some(5000))?;
        if !(1..=60_000).contains(&api_timeout_ms) {
            return Err(problem(
                "GATEWAY_API_TIMEOUT_MS",
                "must be between 1 and 60000",
            ));
        }
        if api_timeout_ms >= lock_duration_secs * 1000 {
            return Err(problem(
                "GATEWAY_API_TIMEOUT_MS",
                "must be shorter than GATEWAY_LOCK_DURATION_SECONDS, or no write could finish inside a lease",
            ));
        }

        let auth = match raw.auth.as_deref().unwrap_or("tokenreview") {
            "tokenreview" => AuthMode::TokenReview,
            "none" => AuthMode::None,
            "bearer" => match nonempty(raw.auth_token) {
                Some(token) => AuthMode::Bearer(token),
                None => {
                    return Err(problem(
                        "GATEWAY_AUTH_TOKEN",
                        "required when GATEWAY_AUTH=bearer",
                    ));
                }
            },
            other => {
                return Err(problem(
                    "GATEWAY_AUTH",
                    &format!("'{other}' is not one of tokenreview, bearer, none"),
                ));
            }
        };
        let log_format = match raw.log_format.as_deref().unwrap_or("json") {
            "json" => LogFormat::Json,
            "text" => LogFormat::Text,
            other => {
                return Err(problem(
                    "GATEWAY_LOG_FORMAT",
                    &format!("'{other}' is not one of json, text"),
                ));
            }
        };
        let max_body_bytes: usize = parse(
            "GATEWAY_MAX_BODY_BYTES",
            raw.max_body_bytes,
            Some(256 * 1024),
        )?;
        let max_in_flight: usize = parse("GATEWAY_MAX_IN_FLIGHT", raw.max_in_flight, Some(1024))?;
        let alert_concurrency: usize =
            parse("GATEWAY_ALERT_CONCURRENCY", raw.alert_concurrency, Some(8))?;
        for (var, v) in [
            ("GATEWAY_MAX_BODY_BYTES", max_body_bytes),
            ("GATEWAY_MAX_IN_FLIGHT", max_in_flight),
            ("GATEWAY_ALERT_CONCURRENCY", alert_concurrency),
        ] {
            if v == 0 {
                return Err(problem(var, "must be greater than 0"));
            }
        }
        let shutdown_secs: u64 = parse(
            "GATEWAY_SHUTDOWN_TIMEOUT_SECONDS",
            raw.shutdown_timeout_seconds,
            Some(20),
        )?;
        let distributed_locking: bool = parse(
            "GATEWAY_ENABLE_DISTRIBUTED_LOCKING",
            raw.enable_distributed_locking,
            Some(true),
        )?;
        let fencing = !parse::<bool>(
            "GATEWAY_UNSAFE_DISABLE_FENCING",
            raw.unsafe_disable_fencing,
            Some(false),
        )?;
        let instance = nonempty(platform.pod_name)
            .or(nonempty(platform.hostname))
            .unwrap_or_else(|| "signal-gateway".into());

        Ok(Config {
            listen_addr,
            namespace,
            lock_namespace,
            distributed_locking,
            lock_duration: Duration::from_secs(lock_duration_secs),
            lock_wait: Duration::from_millis(lock_wait_ms),
            auth,
            cluster_id: nonempty(raw.cluster_id),
            max_body_bytes,
            api_timeout: Duration::from_millis(api_timeout_ms),
            max_in_flight,
            alert_concurrency,
            log_format,
            shutdown_timeout: Duration::from_secs(shutdown_secs),
            instance,
            fencing,
        })
    }
}

fn nonempty(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.trim().is_empty())
}

fn problem(var: &'static str, problem: &str) -> ConfigError {
    ConfigError {
        var,
        problem: problem.to_owned(),
    }
}

fn parse<T: FromStr>(
    var: &'static str,
    value: Option<String>,
    default: Option<T>,
) -> Result<T, ConfigError> {
    match nonempty(value) {
        Some(v) => parse_value(var, &v),
        None => default.ok_or_else(|| problem(var, "required")),
    }
}

fn parse_value<T: FromStr>(var: &'static str, value: &str) -> Result<T, ConfigError> {
    value.trim().parse().map_err(|_| {
        problem(
            var,
            &format!("cannot parse '{value}' as {}", short_type::<T>()),
        )
    })
}

fn short_type<T>() -> &'static str {
    let full = std::any::type_name::<T>();
    full.rsplit("::").next().unwrap_or(full)
}

fn check_dns_label(var: &'static str, value: &str) -> Result<(), ConfigError> {
    let ok = value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(problem(
            var,
            &format!("'{value}' is not a valid namespace name"),
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
        assert!(c.fencing);
        assert_eq!(c.lock_duration, Duration::from_secs(30));
        assert_eq!(c.auth, AuthMode::TokenReview);
        assert_eq!(c.max_body_bytes, 256 * 1024);
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
    fn bad_values_name_their_variable() {
        let cases: [(&[(&str, &str)], &str); 7] = [
            (&[], "GATEWAY_NAMESPACE"),
            (&[("GATEWAY_NAMESPACE", "Bad_NS")], "GATEWAY_NAMESPACE"),
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
                    ("GATEWAY_ENABLE_DISTRIBUTED_LOCKING", "yes"),
                ],
                "GATEWAY_ENABLE_DISTRIBUTED_LOCKING",
            ),
            (
                &[("GATEWAY_NAMESPACE", "a"), ("GATEWAY_AUTH", "magic")],
                "GATEWAY_AUTH",
            ),
            (
                &[("GATEWAY_NAMESPACE", "a"), ("GATEWAY_AUTH", "bearer")],
                "GATEWAY_AUTH_TOKEN",
            ),
            (&[("GATEWAY_NAMESPACE", "a"), ("PORT", "99999")], "PORT"),
        ];
        for (vars, var) in cases {
            let err = Config::from_vars(vars.iter().copied()).unwrap_err();
            assert_eq!(err.var, var, "{err}");
            assert!(err.to_string().contains(var), "{err}");
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
}
