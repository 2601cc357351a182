//! Calls is the call budget of one batch: a timeout on every Kubernetes request, a count of
//! them, the one retry policy, and the error type of this module.

use opentelemetry::KeyValue;
use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

/// KubeError is a Kubernetes call that failed; `op` and `name` say which.
#[derive(Clone, Debug, thiserror::Error)]
pub enum KubeError {
    #[error("{op} {name}: no answer within {after:?}")]
    Timeout {
        op: &'static str,
        name: String,
        after: Duration,
    },
    /// Display carries the whole cause chain: a connect error names its TLS or DNS cause.
    #[error("{op} {name}: {}", causes(source.as_ref()))]
    Failed {
        op: &'static str,
        name: String,
        #[source]
        source: Arc<kube::Error>,
    },
    /// The API server answered something this client cannot use (no Date header, bad JSON).
    #[error("{op} {name}: {message}")]
    Unusable {
        op: &'static str,
        name: String,
        message: String,
    },
}

/// causes joins an error's message with its sources' (each once).
fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = cause.source();
    }
    out
}

impl KubeError {
    pub(crate) fn failed(op: &'static str, name: &str, source: kube::Error) -> KubeError {
        KubeError::Failed {
            op,
            name: name.to_owned(),
            source: Arc::new(source),
        }
    }

    /// needs_operator reports a failure no retry can fix: RBAC, a missing CRD, a rejected object.
    #[must_use]
    pub fn needs_operator(&self) -> bool {
        match self {
            KubeError::Failed { source, .. } => {
                matches!(code(source), Some(400 | 401 | 403 | 404 | 422))
            }
            KubeError::Timeout { .. } | KubeError::Unusable { .. } => false,
        }
    }

    /// metric_label is a short constant naming the error class.
    #[must_use]
    pub fn metric_label(&self) -> &'static str {
        if self.needs_operator() {
            "api"
        } else {
            "api_transient"
        }
    }
}

/// code is the HTTP status of a Kubernetes API error, if the server answered.
pub(crate) fn code(err: &kube::Error) -> Option<u16> {
    match err {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

/// ApiCalls applies the per-call timeout and counts every request it sends.
#[derive(Debug)]
pub struct ApiCalls {
    timeout: Duration,
    count: AtomicU32,
}

impl ApiCalls {
    /// new starts a counter at zero with the given per-call timeout.
    #[must_use]
    pub fn new(timeout: Duration) -> ApiCalls {
        ApiCalls {
            timeout,
            count: AtomicU32::new(0),
        }
    }

    /// count is the number of requests sent so far.
    #[must_use]
    pub fn count(&self) -> u32 {
        self.count.load(Ordering::Relaxed)
    }

    /// timeout is the bound on each single call.
    #[must_use]
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// run sends one request bounded by the timeout; the inner result keeps the
    /// API error so that callers can tell 404 and 409 apart. Every request is counted
    /// in `gateway.kube.api.requests` by verb, resource and outcome.
    pub(crate) async fn run<T>(
        &self,
        op: &'static str,
        name: &str,
        fut: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<Result<T, kube::Error>, KubeError> {
        // Every operation must be listed, so that its series exist at zero from start-up.
        debug_assert!(is_listed(op), "{op:?} is missing from OPERATIONS");
        self.count.fetch_add(1, Ordering::Relaxed);
        let sent = tokio::time::timeout(self.timeout, fut).await;
        let outcome = match &sent {
            Err(_) => "timeout",
            Ok(Ok(_)) => "ok",
            Ok(Err(e)) => outcome(code(e)),
        };
        let (verb, resource) = verb_and_resource(op);
        crate::telemetry::metrics().kube_api_requests.add(
            1,
            &[
                KeyValue::new("verb", verb),
                KeyValue::new("resource", resource),
                KeyValue::new("outcome", outcome),
            ],
        );
        sent.map_err(|_| KubeError::Timeout {
            op,
            name: name.to_owned(),
            after: self.timeout,
        })
    }

    /// read sends an idempotent read; a transport failure (connection reset or
    /// refused) is retried twice, since repeating a read is always safe.
    pub(crate) async fn read<T, F, Fut>(
        &self,
        op: &'static str,
        name: &str,
        mut f: F,
    ) -> Result<Result<T, kube::Error>, KubeError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, kube::Error>>,
    {
        let mut attempt = 0;
        loop {
            match self.run(op, name, f()).await? {
                Err(e) if code(&e).is_none() && attempt < 2 => {
                    tracing::debug!(op, name, error = %e, "retrying read after transport error");
                    tokio::time::sleep(backoff(attempt, Duration::from_millis(20))).await;
                    attempt += 1;
                }
                other => return Ok(other),
            }
        }
    }
}

/// OPERATIONS are the names (`op`) of every request the gateway sends, besides the
/// metadata reads of the known kinds (each kind's `read_op`).
const OPERATIONS: [&str; 13] = [
    "reading lease",
    "listing leases",
    "creating lease",
    "claiming lease",
    "releasing lease",
    "deleting lease",
    "reading remediationrequest",
    "listing remediationrequests",
    "creating remediationrequest",
    "updating remediationrequest status",
    "reviewing token",
    "reviewing access",
    "reading version",
];

/// OUTCOMES are the values of the `outcome` label of `gateway.kube.api.requests`.
pub(crate) const OUTCOMES: [&str; 7] = [
    "ok",
    "conflict",
    "not_found",
    "client_error",
    "server_error",
    "timeout",
    "transport",
];

/// is_listed reports whether `op` is one of the operations `request_kinds` covers.
fn is_listed(op: &str) -> bool {
    OPERATIONS.contains(&op) || crate::signal::KINDS.iter().any(|k| k.read_op == op)
}

/// request_kinds are the distinct (verb, resource) pairs of every request the gateway can
/// send: with `OUTCOMES`, the label sets of `gateway.kube.api.requests`.
pub(crate) fn request_kinds() -> Vec<(&'static str, &'static str)> {
    let ops = OPERATIONS
        .iter()
        .copied()
        .chain(crate::signal::KINDS.iter().map(|k| k.read_op));
    let mut out = Vec::new();
    for pair in ops.map(verb_and_resource) {
        if !out.contains(&pair) {
            out.push(pair);
        }
    }
    out
}

/// outcome names the answer of a failed request: a bounded label set.
fn outcome(code: Option<u16>) -> &'static str {
    match code {
        None => "transport",
        Some(404) => "not_found",
        Some(409) => "conflict",
        Some(400..=499) => "client_error",
        Some(_) => "server_error",
    }
}

/// verb_and_resource maps an operation's name (`op`) to the request's verb and resource.
fn verb_and_resource(op: &str) -> (&'static str, &'static str) {
    let verb = match op.split(' ').next() {
        Some("reading") => "get",
        Some("listing") => "list",
        Some("creating" | "reviewing") => "create",
        Some("claiming" | "releasing" | "updating") => "patch",
        Some("deleting") => "delete",
        _ => "other",
    };
    let resource = if op.ends_with("status") {
        "remediationrequests/status"
    } else if op.contains("remediationrequest") {
        "remediationrequests"
    } else if op.contains("lease") {
        "leases"
    } else if op.contains("token") {
        "tokenreviews"
    } else if op.contains("access") {
        "subjectaccessreviews"
    } else if op.contains("version") {
        "version"
    } else if let Some(kind) = crate::signal::KINDS.iter().find(|k| k.read_op == op) {
        kind.plural
    } else {
        "other"
    };
    (verb, resource)
}

/// backoff is the one retry policy: jittered exponential, uniform in [d/2, d]
/// with d = base * 2^attempt, capped at 1 s.
#[must_use]
pub fn backoff(attempt: u32, base: Duration) -> Duration {
    let base = base.as_millis().max(2) as u64;
    let ceiling = base.saturating_mul(1 << attempt.min(10)).min(1000);
    Duration::from_millis(rand::random_range(ceiling / 2..=ceiling))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure("boom", "Reason")
                .with_code(code)
                .boxed(),
        )
    }

    #[test]
    fn api_server_overload_and_5xx_are_transient() {
        for code in [409, 429, 500, 502, 503, 504] {
            let e = KubeError::failed("listing", "x", api_error(code));
            assert!(!e.needs_operator(), "{code}: {e:?}");
        }
    }

    #[test]
    fn rbac_and_schema_failures_need_an_operator() {
        for code in [401, 403, 404, 422] {
            let e = KubeError::failed("creating", "x", api_error(code));
            assert!(e.needs_operator(), "{code}: {e:?}");
            assert!(e.to_string().contains("creating x"), "{e}");
        }
    }

    #[test]
    fn every_operation_has_its_verb_and_resource() {
        for (op, want) in [
            ("reading lease", ("get", "leases")),
            ("listing leases", ("list", "leases")),
            ("creating lease", ("create", "leases")),
            ("claiming lease", ("patch", "leases")),
            ("releasing lease", ("patch", "leases")),
            ("deleting lease", ("delete", "leases")),
            ("reading remediationrequest", ("get", "remediationrequests")),
            (
                "listing remediationrequests",
                ("list", "remediationrequests"),
            ),
            (
                "creating remediationrequest",
                ("create", "remediationrequests"),
            ),
            (
                "updating remediationrequest status",
                ("patch", "remediationrequests/status"),
            ),
            ("reviewing token", ("create", "tokenreviews")),
            ("reviewing access", ("create", "subjectaccessreviews")),
            ("reading version", ("get", "version")),
        ] {
            assert_eq!(verb_and_resource(op), want, "{op}");
        }
        assert_eq!(outcome(Some(409)), "conflict");
        assert_eq!(outcome(Some(503)), "server_error");
        assert_eq!(outcome(None), "transport");
        for code in [None, Some(400), Some(404), Some(409), Some(500)] {
            assert!(OUTCOMES.contains(&outcome(code)), "{code:?}");
        }
    }

    #[test]
    fn every_listed_request_has_a_known_verb_and_resource() {
        let kinds = request_kinds();
        assert!(
            kinds.iter().all(|(v, r)| *v != "other" && *r != "other"),
            "{kinds:?}"
        );
        assert_eq!(
            kinds.len(),
            OPERATIONS.len() - 1 + crate::signal::KINDS.len(),
            "two operations patch a lease; every other pair is its own: {kinds:?}"
        );
        assert!(kinds.contains(&("get", "pods")), "{kinds:?}");
        assert!(is_listed("reading deployments"));
        assert!(!is_listed("reading secrets"));
    }

    #[test]
    fn backoff_grows_and_stays_bounded() {
        let base = Duration::from_millis(25);
        for attempt in 0..40 {
            let d = backoff(attempt, base);
            assert!(d <= Duration::from_secs(1), "{d:?}");
            assert!(d >= Duration::from_millis(12), "{d:?}");
        }
        assert!(backoff(0, base) <= base);
    }
}
