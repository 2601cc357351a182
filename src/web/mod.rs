//! Web is the HTTP adapter: the axum `Router` shared by every serve mode, request checks
//! (`auth`, content type, size), and the answers (`problem` maps every error to a status);
//! `server` and `tls` serve it over HTTP or HTTPS.

mod answer;
mod auth;
mod headers;
mod problem;
mod server;
mod tls;

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use axum::{
    Json, Router,
    extract::{Request, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use futures::{StreamExt, stream};
use serde::Serialize;

pub use auth::Auth;
pub(crate) use problem::rejects_object;
use problem::{Rejection, error_response, problem};
pub use server::{Limits, serve};
pub use tls::{ClientCert, LoadError as TlsLoadError, Tls, check as check_tls};

use crate::{
    audit::Caller,
    config::Config,
    pipeline::{Disposition, Outcome, Pipeline, Refusal},
    signal::{self, Item, ParseContext, Source},
    telemetry,
};

/// AppState is what every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub pipeline: Arc<Pipeline>,
    pub auth: Arc<Auth>,
    pub client: kube::Client,
    /// ready turns false when shutdown begins.
    pub ready: Arc<AtomicBool>,
    /// requests bounds the requests in progress (`GATEWAY_MAX_IN_FLIGHT`), authentication
    /// included.
    pub requests: Arc<tokio::sync::Semaphore>,
    /// config holds the limits and timeouts of a request.
    pub config: Arc<Config>,
}

/// router builds the HTTP API: the two signal endpoints and the health endpoints.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/v1/signals/prometheus", post(prometheus))
        .route("/api/v1/signals/kubernetes-event", post(kubernetes_event))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(|| async { problem(StatusCode::NOT_FOUND, "no such endpoint".into()) })
        .with_state(state)
        .layer(axum::middleware::from_fn(headers::stamp))
}

/// healthz answers as kubernaut's Gateway does: alive, and the time.
async fn healthz() -> Response {
    Json(serde_json::json!({
        "status": "healthy",
        "timestamp": jiff::Timestamp::now().round(jiff::Unit::Second).unwrap_or_default().to_string(),
    }))
    .into_response()
}

async fn readyz(State(s): State<AppState>) -> Response {
    if !s.ready.load(Ordering::SeqCst) {
        return problem(StatusCode::SERVICE_UNAVAILABLE, "shutting down".into());
    }
    match crate::k8s::reachable(&s.client, s.config.api_timeout).await {
        Ok(()) => Json(serde_json::json!({"status": "ready"})).into_response(),
        Err(e) => {
            // Readiness is open to everyone: the API server's message stays in the log.
            tracing::warn!(error = %e, "readiness check failed");
            problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "Kubernetes API not reachable".into(),
            )
        }
    }
}

async fn prometheus(State(s): State<AppState>, req: Request) -> Response {
    bounded(s, req, Source::Alertmanager)
        .await
        .unwrap_or_else(error_response)
}

async fn kubernetes_event(State(s): State<AppState>, req: Request) -> Response {
    bounded(s, req, Source::KubernetesEvent)
        .await
        .unwrap_or_else(error_response)
}

/// bounded runs one request inside the request limit and the request timeout; both
/// cover authentication, so a flood of requests cannot queue unbounded TokenReviews.
async fn bounded(s: AppState, req: Request, source: Source) -> Result<Response, Rejection> {
    let _permit = Arc::clone(&s.requests)
        .try_acquire_owned()
        .map_err(|_| Rejection::Busy {
            limit: s.config.max_in_flight,
        })?;
    // Under Lambda the invocation's deadline may come first: answer 503 before it.
    let limit = s.config.request_timeout;
    let after = req
        .extensions()
        .get::<Deadline>()
        .map_or(limit, |d| d.remaining().min(limit));
    tokio::time::timeout(after, handle(s, req, source))
        .await
        .unwrap_or(Err(Rejection::Timeout { after }))
}

/// Deadline is when a request's answer must be sent at the latest (under Lambda: the
/// invocation's deadline less a margin); a request extension, set by the serving mode.
#[derive(Clone, Copy, Debug)]
pub struct Deadline(pub tokio::time::Instant);

impl Deadline {
    /// remaining is the time left before the deadline (zero once it passed).
    #[must_use]
    pub fn remaining(&self) -> std::time::Duration {
        self.0
            .saturating_duration_since(tokio::time::Instant::now())
    }
}

/// Status is what became of one alert or event.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Status {
    Created,
    Duplicate,
    Ignored,
    Rejected,
    /// Failed permanently (the API server refused this signal's RR); never retried.
    Failed,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Duplicate => "duplicate",
            Status::Ignored => "ignored",
            Status::Rejected => "rejected",
            Status::Failed => "failed",
        }
    }
}

/// SignalResult is one entry of the success body.
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
struct SignalResult {
    status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    fingerprint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    remediation_request: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    occurrence_count: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    /// rejection says, as kubernaut's Gateway does, why a signal got no RR and what to do.
    #[serde(skip_serializing_if = "Option::is_none")]
    rejection: Option<RejectionBody>,
    /// seen is the RR's first and last occurrence after the count (kubernaut's `metadata`).
    #[serde(skip)]
    seen: Option<(jiff::Timestamp, jiff::Timestamp)>,
}

/// RejectionBody is kubernaut's `rejection` object.
#[derive(Serialize, Debug, PartialEq, Eq)]
struct RejectionBody {
    status: &'static str,
    reason: &'static str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    resource: Option<String>,
    action: String,
}

impl From<&Refusal> for RejectionBody {
    fn from(r: &Refusal) -> RejectionBody {
        RejectionBody {
            status: "rejected",
            reason: r.reason(),
            message: r.message(),
            resource: r.resource(),
            action: r.action(),
        }
    }
}

/// handle authenticates the caller, reads and decodes the payload and answers each of its
/// items, at most `GATEWAY_ALERT_CONCURRENCY` at a time.
async fn handle(s: AppState, req: Request, source: Source) -> Result<Response, Rejection> {
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0);
    let cert = req.extensions().get::<ClientCert>();
    let caller = s.auth.check(req.headers(), peer, cert).await?;
    let items = decode(&s.config, req, source).await?;
    let intake: Vec<telemetry::Intake> = items
        .iter()
        .map(|item| telemetry::metrics().intake(source, item))
        .collect();
    let results: Vec<Result<SignalResult, Rejection>> = stream::iter(items)
        .map(|item| answer_item(Arc::clone(&s.pipeline), item, caller.clone()))
        .buffered(s.config.alert_concurrency)
        .collect()
        .await;
    // `buffered` keeps the order of the items.
    for (r, intake) in results.iter().zip(&intake) {
        let status = r.as_ref().map_or("failed", |r| r.status.as_str());
        telemetry::metrics().answered(source, intake, status);
    }
    let results = summarize(results)?;
    let code = status_for(&results)?;
    Ok((code, Json(answer::body(&results))).into_response())
}

/// decode checks the content type, reads the body within `GATEWAY_MAX_BODY_BYTES` and
/// decodes it into items.
async fn decode(config: &Config, req: Request, source: Source) -> Result<Vec<Item>, Rejection> {
    check_content_type(req.headers())?;
    let timestamp_header = req
        .headers()
        .get("x-timestamp")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let body = read_body(req, config.max_body_bytes).await?;
    tracing::debug!(
        source = source.as_str(),
        bytes = body.len(),
        payload = %String::from_utf8_lossy(&body[..body.len().min(DEBUG_PAYLOAD_BYTES)]),
        "payload received"
    );
    let ctx = ParseContext {
        cluster_id: config.cluster_id.clone(),
        received_time: jiff::Timestamp::now(),
        max_alerts: config.max_alerts,
        replay_window: config.replay_window,
        timestamp_header,
    };
    match source {
        Source::Alertmanager => signal::parse_alertmanager(&body, &ctx),
        Source::KubernetesEvent => signal::parse_event(&body, &ctx).map(|i| vec![i]),
    }
    .map_err(|e| match e {
        signal::PayloadError::TooManyAlerts { .. } => Rejection::TooManyAlerts(e.to_string()),
        e => Rejection::BadRequest(e.to_string()),
    })
}

/// answer_item submits a signal to the pipeline and says what became of it, or of an item
/// that is no signal.
async fn answer_item(
    pipeline: Arc<Pipeline>,
    item: Item,
    caller: Caller,
) -> Result<SignalResult, Rejection> {
    match item {
        Item::Signal(signal) => {
            let fingerprint = Some(signal.fingerprint.to_string());
            match pipeline.submit(signal, caller).await {
                Ok(outcome) => Ok(SignalResult::of(outcome)),
                Err(e) if rejects_object(&e) => Ok(SignalResult {
                    fingerprint,
                    ..SignalResult::new(Status::Failed, problem::bounded(e.to_string()))
                }),
                Err(e) => Err(e.into()),
            }
        }
        Item::Ignored {
            fingerprint,
            reason,
        } => Ok(SignalResult {
            fingerprint: fingerprint.map(|f| f.to_string()),
            ..SignalResult::new(Status::Ignored, reason)
        }),
        Item::Rejected { reason } => Ok(SignalResult::new(Status::Rejected, reason)),
    }
}

impl SignalResult {
    /// new is an entry of `status` for `reason`, with nothing else known.
    fn new(status: Status, reason: String) -> SignalResult {
        SignalResult {
            status,
            fingerprint: None,
            remediation_request: None,
            occurrence_count: None,
            reason: Some(reason),
            rejection: None,
            seen: None,
        }
    }

    /// of is the entry of a signal the pipeline counted, or refused an RR.
    fn of(outcome: Outcome) -> SignalResult {
        let fingerprint = Some(outcome.fingerprint.to_string());
        match outcome.counted {
            Ok(counted) => SignalResult {
                status: match counted.disposition {
                    Disposition::Created => Status::Created,
                    Disposition::Duplicate => Status::Duplicate,
                },
                fingerprint,
                remediation_request: Some(counted.remediation_request),
                occurrence_count: Some(counted.tally.occurrence_count),
                reason: None,
                rejection: None,
                seen: Some((counted.tally.first_seen, counted.tally.last_seen)),
            },
            Err(refusal) => SignalResult {
                fingerprint,
                rejection: Some((&refusal).into()),
                ..SignalResult::new(Status::Rejected, refusal.message())
            },
        }
    }
}

/// summarize fails the whole request if any signal failed in a way a retry can fix
/// (overload, a transient API failure: 503; the gateway's own RBAC: 500): a 2xx promises
/// that every write it reports is durable. Retrying a group re-counts the alerts that did
/// succeed, which over-counts but never loses a signal. Permanent per-signal failures
/// arrive here as `failed` results and do not fail the group.
fn summarize(
    results: Vec<Result<SignalResult, Rejection>>,
) -> Result<Vec<SignalResult>, Rejection> {
    results.into_iter().collect()
}

/// DEBUG_PAYLOAD_BYTES is how much of a payload a debug log line shows.
const DEBUG_PAYLOAD_BYTES: usize = 512;
/// DETAIL_REASONS is how many rejection reasons a 400 detail lists before counting the rest.
const DETAIL_REASONS: usize = 3;

/// status_for picks 201 if anything was created, 202 if accepted signals were
/// all duplicates, 200 if everything was ignored or refused by scope or resolution (as
/// kubernaut answers them), 400 if everything was rejected or failed.
fn status_for(results: &[SignalResult]) -> Result<StatusCode, Rejection> {
    let any = |s: Status| results.iter().any(|r| r.status == s);
    if any(Status::Created) {
        Ok(StatusCode::CREATED)
    } else if any(Status::Duplicate) {
        Ok(StatusCode::ACCEPTED)
    } else if any(Status::Ignored)
        || results.iter().any(|r| r.rejection.is_some())
        || results.is_empty()
    {
        Ok(StatusCode::OK)
    } else {
        let reasons: Vec<&str> = results.iter().filter_map(|r| r.reason.as_deref()).collect();
        let mut detail = format!(
            "no signal could be accepted: {}",
            reasons[..reasons.len().min(DETAIL_REASONS)].join("; ")
        );
        if reasons.len() > DETAIL_REASONS {
            detail.push_str(&format!(" (and {} more)", reasons.len() - DETAIL_REASONS));
        }
        Err(Rejection::BadRequest(detail))
    }
}

fn check_content_type(headers: &HeaderMap) -> Result<(), Rejection> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence == "application/json" {
        Ok(())
    } else {
        Err(Rejection::UnsupportedMediaType(ct.to_owned()))
    }
}

async fn read_body(req: Request, limit: usize) -> Result<axum::body::Bytes, Rejection> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(Rejection::PayloadTooLarge { limit });
    }
    axum::body::to_bytes(req.into_body(), limit)
        .await
        .map_err(|e| {
            if std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
            {
                Rejection::PayloadTooLarge { limit }
            } else {
                Rejection::BadRequest(format!("reading request body: {e}"))
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline;
    use axum::http::HeaderValue;

    #[test]
    fn every_status_has_its_series_from_start_up() {
        let all = [
            Status::Created,
            Status::Duplicate,
            Status::Ignored,
            Status::Rejected,
            Status::Failed,
        ];
        // Exhaustive: a new status fails to compile here until it is listed above.
        for s in all {
            match s {
                Status::Created
                | Status::Duplicate
                | Status::Ignored
                | Status::Rejected
                | Status::Failed => {}
            }
        }
        assert_eq!(all.map(Status::as_str), crate::telemetry::SIGNAL_STATUSES);
    }

    fn r(status: Status) -> SignalResult {
        SignalResult::new(status, "x".into())
    }

    #[test]
    fn status_codes_follow_the_contract() {
        use Status::*;
        assert_eq!(
            status_for(&[r(Duplicate), r(Created), r(Ignored)]).unwrap(),
            StatusCode::CREATED
        );
        assert_eq!(
            status_for(&[r(Duplicate), r(Ignored)]).unwrap(),
            StatusCode::ACCEPTED
        );
        assert_eq!(
            status_for(&[r(Ignored), r(Rejected)]).unwrap(),
            StatusCode::OK
        );
        assert!(matches!(
            status_for(&[r(Rejected)]),
            Err(Rejection::BadRequest(_))
        ));
        let body = serde_json::to_value(r(Duplicate)).unwrap_or_default();
        assert_eq!(body["status"], "duplicate");
    }

    #[test]
    fn one_failed_signal_fails_the_request() {
        let e = summarize(vec![
            Ok(r(Status::Created)),
            Err(pipeline::Error::Cancelled.into()),
        ])
        .unwrap_err();
        assert_eq!(problem::status_of(&e), StatusCode::SERVICE_UNAVAILABLE);
        let e = summarize(vec![
            Ok(r(Status::Created)),
            Err(pipeline::Error::Overloaded { limit: 3 }.into()),
        ])
        .unwrap_err();
        assert_eq!(problem::status_of(&e), StatusCode::SERVICE_UNAVAILABLE);
        let ok = summarize(vec![Ok(r(Status::Created)), Ok(r(Status::Failed))]).unwrap();
        assert_eq!(status_for(&ok).unwrap(), StatusCode::CREATED);
    }

    #[test]
    fn a_400_detail_lists_a_few_reasons_and_counts_the_rest() {
        let many: Vec<SignalResult> = (0..130_000).map(|_| r(Status::Rejected)).collect();
        let Err(e) = status_for(&many) else {
            panic!("all rejected is a 400")
        };
        let detail = e.to_string();
        assert!(detail.ends_with("(and 129997 more)"), "{detail}");
        assert!(detail.len() < 1024, "{}", detail.len());
        assert!(matches!(
            status_for(&[r(Status::Failed), r(Status::Rejected)]),
            Err(Rejection::BadRequest(_))
        ));
    }

    #[test]
    fn content_types_are_checked_by_essence() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("Application/JSON; charset=utf-8"),
        );
        assert!(check_content_type(&h).is_ok());
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert!(
            matches!(check_content_type(&h), Err(Rejection::UnsupportedMediaType(t)) if t == "text/plain")
        );
    }
}
