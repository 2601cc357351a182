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

use crate::signal::Kind;

/// KubeError is a Kubernetes call that failed; `op` (an `Op`'s words) and `name` say which.
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
        op: Op,
        name: &str,
        fut: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<Result<T, kube::Error>, KubeError> {
        // Every operation must be listed, so that its series exist at zero from start-up.
        debug_assert!(op.listed(), "{} is missing from Op::ALL", op.words());
        self.count.fetch_add(1, Ordering::Relaxed);
        let sent = tokio::time::timeout(self.timeout, fut).await;
        let outcome = match &sent {
            Err(_) => "timeout",
            Ok(Ok(_)) => "ok",
            Ok(Err(e)) => outcome(code(e)),
        };
        let (verb, resource, words) = op.parts();
        crate::telemetry::metrics().kube_api_requests.add(
            1,
            &[
                KeyValue::new("verb", verb),
                KeyValue::new("resource", resource),
                KeyValue::new("outcome", outcome),
            ],
        );
        sent.map_err(|_| KubeError::Timeout {
            op: words,
            name: name.to_owned(),
            after: self.timeout,
        })
    }

    /// read sends an idempotent read; a transport failure (connection reset or
    /// refused) is retried twice, since repeating a read is always safe.
    pub(crate) async fn read<T, F, Fut>(
        &self,
        op: Op,
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
                    tracing::debug!(op = op.words(), name, error = %e, "retrying read after transport error");
                    tokio::time::sleep(backoff(attempt, Duration::from_millis(20))).await;
                    attempt += 1;
                }
                other => return Ok(other),
            }
        }
    }
}

/// Op is one kind of request the gateway sends: its verb and resource label
/// `gateway.kube.api.requests`, and its words name it in errors ("reading lease sg-…").
#[derive(Clone, Copy)]
pub(crate) enum Op {
    ReadLease,
    ListLeases,
    CreateLease,
    ClaimLease,
    ReleaseLease,
    DeleteLease,
    ReadRr,
    ListRrs,
    CreateRr,
    UpdateRrStatus,
    ReviewToken,
    ReviewAccess,
    ReadVersion,
    /// ReadMetadata is the metadata read of one object of a known kind.
    ReadMetadata(&'static Kind),
}

impl Op {
    /// ALL are the operations besides the metadata reads, which come from the kinds table.
    const ALL: [Op; 13] = [
        Op::ReadLease,
        Op::ListLeases,
        Op::CreateLease,
        Op::ClaimLease,
        Op::ReleaseLease,
        Op::DeleteLease,
        Op::ReadRr,
        Op::ListRrs,
        Op::CreateRr,
        Op::UpdateRrStatus,
        Op::ReviewToken,
        Op::ReviewAccess,
        Op::ReadVersion,
    ];

    /// parts are the operation's verb, resource and words.
    const fn parts(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Op::ReadLease => ("get", "leases", "reading lease"),
            Op::ListLeases => ("list", "leases", "listing leases"),
            Op::CreateLease => ("create", "leases", "creating lease"),
            Op::ClaimLease => ("patch", "leases", "claiming lease"),
            Op::ReleaseLease => ("patch", "leases", "releasing lease"),
            Op::DeleteLease => ("delete", "leases", "deleting lease"),
            Op::ReadRr => ("get", "remediationrequests", "reading remediationrequest"),
            Op::ListRrs => ("list", "remediationrequests", "listing remediationrequests"),
            Op::CreateRr => (
                "create",
                "remediationrequests",
                "creating remediationrequest",
            ),
            Op::UpdateRrStatus => (
                "patch",
                "remediationrequests/status",
                "updating remediationrequest status",
            ),
            Op::ReviewToken => ("create", "tokenreviews", "reviewing token"),
            Op::ReviewAccess => ("create", "subjectaccessreviews", "reviewing access"),
            Op::ReadVersion => ("get", "version", "reading version"),
            Op::ReadMetadata(kind) => ("get", kind.plural, kind.read_op),
        }
    }

    /// words name the operation in errors and logs.
    pub(crate) const fn words(self) -> &'static str {
        self.parts().2
    }

    /// failed is this operation's error for `name`, failed with `source`.
    pub(crate) fn failed(self, name: &str, source: kube::Error) -> KubeError {
        KubeError::failed(self.words(), name, source)
    }

    /// listed reports whether `request_kinds` covers this operation.
    fn listed(self) -> bool {
        matches!(self, Op::ReadMetadata(_)) || Op::ALL.iter().any(|o| o.words() == self.words())
    }
}

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

/// request_kinds are the distinct (verb, resource) pairs of every request the gateway can
/// send: with `OUTCOMES`, the label sets of `gateway.kube.api.requests`.
pub(crate) fn request_kinds() -> Vec<(&'static str, &'static str)> {
    let ops = Op::ALL
        .into_iter()
        .chain(crate::signal::KINDS.iter().map(Op::ReadMetadata));
    let mut out = Vec::new();
    for (verb, resource, _) in ops.map(Op::parts) {
        if !out.contains(&(verb, resource)) {
            out.push((verb, resource));
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
            (Op::ReadLease, ("get", "leases", "reading lease")),
            (Op::ListLeases, ("list", "leases", "listing leases")),
            (Op::CreateLease, ("create", "leases", "creating lease")),
            (Op::ClaimLease, ("patch", "leases", "claiming lease")),
            (Op::ReleaseLease, ("patch", "leases", "releasing lease")),
            (Op::DeleteLease, ("delete", "leases", "deleting lease")),
            (
                Op::ReadRr,
                ("get", "remediationrequests", "reading remediationrequest"),
            ),
            (
                Op::ListRrs,
                ("list", "remediationrequests", "listing remediationrequests"),
            ),
            (
                Op::CreateRr,
                (
                    "create",
                    "remediationrequests",
                    "creating remediationrequest",
                ),
            ),
            (
                Op::UpdateRrStatus,
                (
                    "patch",
                    "remediationrequests/status",
                    "updating remediationrequest status",
                ),
            ),
            (
                Op::ReviewToken,
                ("create", "tokenreviews", "reviewing token"),
            ),
            (
                Op::ReviewAccess,
                ("create", "subjectaccessreviews", "reviewing access"),
            ),
            (Op::ReadVersion, ("get", "version", "reading version")),
        ] {
            assert_eq!(op.parts(), want, "{}", op.words());
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
        assert_eq!(
            kinds.len(),
            Op::ALL.len() - 1 + crate::signal::KINDS.len(),
            "two operations patch a lease; every other pair is its own: {kinds:?}"
        );
        assert!(kinds.contains(&("get", "pods")), "{kinds:?}");
        let deployments = crate::signal::known_kind("Deployment").map(Op::ReadMetadata);
        assert_eq!(
            deployments.map(Op::parts),
            Some(("get", "deployments", "reading deployments"))
        );
        assert!(Op::ALL.into_iter().all(Op::listed));
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
