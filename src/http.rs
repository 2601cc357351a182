//! Http is the axum `Router` shared by every serve mode, and the one place
//! where errors become HTTP statuses.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use axum::{
    Json, Router,
    body::Body,
    extract::{MatchedPath, Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    middleware,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use futures::{StreamExt, stream};
use serde::Serialize;

use crate::{
    auth::Auth,
    error::Error,
    pipeline::{Disposition, Pipeline},
    signal::{self, Item, ParseContext},
    telemetry::{self, kv},
};

/// AppState is what every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub pipeline: Arc<Pipeline>,
    pub auth: Arc<Auth>,
    /// ready turns false when shutdown begins.
    pub ready: Arc<AtomicBool>,
    pub max_body_bytes: usize,
    pub alert_concurrency: usize,
    pub cluster_id: Option<String>,
}

/// router builds the HTTP API of DESIGN.md.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/v1/signals/prometheus", post(prometheus))
        .route("/api/v1/signals/kubernetes-event", post(kubernetes_event))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .fallback(|| async { problem(StatusCode::NOT_FOUND, "no such endpoint".into()) })
        .layer(middleware::from_fn(record_duration))
        .with_state(state)
}

/// record_duration measures every request for the `http.server.request.duration` histogram.
async fn record_duration(req: Request, next: middleware::Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let start = std::time::Instant::now();
    let res = next.run(req).await;
    telemetry::metrics().request_duration.record(
        start.elapsed().as_secs_f64(),
        &[
            kv("http.route", route),
            kv(
                "http.response.status_code",
                i64::from(res.status().as_u16()),
            ),
        ],
    );
    res
}

async fn readyz(State(s): State<AppState>) -> Response {
    if !s.ready.load(Ordering::SeqCst) {
        return problem(StatusCode::SERVICE_UNAVAILABLE, "shutting down".into());
    }
    match s.pipeline.api_reachable().await {
        Ok(()) => "ok".into_response(),
        Err(e) => problem(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("Kubernetes API not reachable: {e}"),
        ),
    }
}

#[derive(Clone, Copy)]
enum Source {
    Alertmanager,
    Event,
}

async fn prometheus(State(s): State<AppState>, req: Request) -> Response {
    handle(s, req, Source::Alertmanager)
        .await
        .unwrap_or_else(error_response)
}

async fn kubernetes_event(State(s): State<AppState>, req: Request) -> Response {
    handle(s, req, Source::Event)
        .await
        .unwrap_or_else(error_response)
}

/// SignalResult is one entry of the success body.
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
struct SignalResult {
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    fingerprint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    remediation_request: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    occurrence_count: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

async fn handle(s: AppState, req: Request, source: Source) -> Result<Response, Error> {
    s.auth.check(req.headers()).await?;
    check_content_type(req.headers())?;
    let body = read_body(req, s.max_body_bytes).await?;
    let ctx = ParseContext {
        cluster_id: s.cluster_id.clone(),
        received_time: jiff::Timestamp::now(),
    };
    let items = match source {
        Source::Alertmanager => signal::parse_alertmanager(&body, &ctx),
        Source::Event => signal::parse_event(&body, &ctx).map(|i| vec![i]),
    }
    .map_err(|e| Error::BadRequest(e.to_string()))?;

    let results: Vec<Result<SignalResult, Error>> = stream::iter(items)
        .map(|item| {
            let pipeline = Arc::clone(&s.pipeline);
            async move {
                match item {
                    Item::Signal(signal) => {
                        let fingerprint = Some(signal.fingerprint.to_string());
                        let outcome = pipeline.submit(signal).await?;
                        Ok(SignalResult {
                            status: match outcome.disposition {
                                Disposition::Created => "created",
                                Disposition::Duplicate => "duplicate",
                            },
                            fingerprint,
                            remediation_request: Some(outcome.remediation_request),
                            occurrence_count: Some(outcome.occurrence_count),
                            reason: None,
                        })
                    }
                    Item::Ignored {
                        fingerprint,
                        reason,
                    } => Ok(SignalResult {
                        status: "ignored",
                        fingerprint: fingerprint.map(|f| f.to_string()),
                        remediation_request: None,
                        occurrence_count: None,
                        reason: Some(reason),
                    }),
                    Item::Rejected { reason } => Ok(SignalResult {
                        status: "rejected",
                        fingerprint: None,
                        remediation_request: None,
                        occurrence_count: None,
                        reason: Some(reason),
                    }),
                }
            }
        })
        .buffered(s.alert_concurrency)
        .collect()
        .await;
    let source_name = match source {
        Source::Alertmanager => signal::SOURCE_ALERTMANAGER,
        Source::Event => signal::SOURCE_KUBERNETES_EVENT,
    };
    for r in &results {
        let status = r.as_ref().map_or("failed", |r| r.status);
        telemetry::metrics()
            .signals
            .add(1, &[kv("source", source_name), kv("status", status)]);
    }
    let results = summarize(results)?;
    let code = status_for(&results)?;
    Ok((code, Json(serde_json::json!({ "results": results }))).into_response())
}

/// summarize fails the whole request if any signal failed: a 2xx promises
/// that every write it reports is durable. Retrying a group re-counts the
/// alerts that did succeed, which over-counts but never loses a signal.
fn summarize(results: Vec<Result<SignalResult, Error>>) -> Result<Vec<SignalResult>, Error> {
    let mut ok = Vec::with_capacity(results.len());
    let mut overloaded = None;
    for r in results {
        match r {
            Ok(r) => ok.push(r),
            Err(e @ Error::Overloaded { .. }) => overloaded = Some(e),
            Err(e) => return Err(e),
        }
    }
    match overloaded {
        Some(e) => Err(e),
        None => Ok(ok),
    }
}

/// status_for picks 201 if anything was created, 202 if accepted signals were
/// all duplicates, 200 if everything was ignored, 400 if everything was rejected.
fn status_for(results: &[SignalResult]) -> Result<StatusCode, Error> {
    let any = |s: &str| results.iter().any(|r| r.status == s);
    if any("created") {
        Ok(StatusCode::CREATED)
    } else if any("duplicate") {
        Ok(StatusCode::ACCEPTED)
    } else if any("ignored") || results.is_empty() {
        Ok(StatusCode::OK)
    } else {
        let reasons: Vec<&str> = results.iter().filter_map(|r| r.reason.as_deref()).collect();
        Err(Error::BadRequest(format!(
            "no signal could be accepted: {}",
            reasons.join("; ")
        )))
    }
}

fn check_content_type(headers: &HeaderMap) -> Result<(), Error> {
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
        Err(Error::UnsupportedMediaType(ct.to_owned()))
    }
}

async fn read_body(req: Request, limit: usize) -> Result<axum::body::Bytes, Error> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(Error::PayloadTooLarge { limit });
    }
    axum::body::to_bytes(req.into_body(), limit)
        .await
        .map_err(|e| {
            if std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
            {
                Error::PayloadTooLarge { limit }
            } else {
                Error::BadRequest(format!("reading request body: {e}"))
            }
        })
}

/// status_of is the single mapping from errors to HTTP statuses.
#[must_use]
pub fn status_of(e: &Error) -> StatusCode {
    match e {
        Error::BadRequest(_) => StatusCode::BAD_REQUEST,
        Error::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        Error::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        Error::Unauthorized(_) => StatusCode::UNAUTHORIZED,
        Error::Overloaded { .. } => StatusCode::TOO_MANY_REQUESTS,
        Error::Api { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        Error::Transient { .. }
        | Error::LockBusy { .. }
        | Error::Contention(_)
        | Error::ShuttingDown
        | Error::Cancelled => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// RETRY_AFTER_SECONDS is the hint sent with 429 and 503.
pub const RETRY_AFTER_SECONDS: u32 = 2;

fn error_response(e: Error) -> Response {
    let code = status_of(&e);
    if code.is_server_error() {
        tracing::warn!(error = %e, kind = e.metric_label(), status = code.as_u16(), "request failed");
    } else {
        tracing::info!(error = %e, kind = e.metric_label(), status = code.as_u16(), "request refused");
    }
    let mut res = problem(code, e.to_string());
    if code == StatusCode::SERVICE_UNAVAILABLE || code == StatusCode::TOO_MANY_REQUESTS {
        res.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
    }
    if code == StatusCode::UNAUTHORIZED {
        res.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    res
}

/// problem renders an RFC 9457 problem document.
fn problem(code: StatusCode, detail: String) -> Response {
    let body = serde_json::json!({
        "type": "about:blank",
        "title": code.canonical_reason().unwrap_or("Error"),
        "status": code.as_u16(),
        "detail": detail,
    });
    let mut res = Response::new(Body::from(body.to_string()));
    *res.status_mut() = code;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(status: &'static str) -> SignalResult {
        SignalResult {
            status,
            fingerprint: None,
            remediation_request: None,
            occurrence_count: None,
            reason: Some("x".into()),
        }
    }

    #[test]
    fn status_codes_follow_the_contract() {
        assert_eq!(
            status_for(&[r("duplicate"), r("created"), r("ignored")]).unwrap(),
            StatusCode::CREATED
        );
        assert_eq!(
            status_for(&[r("duplicate"), r("ignored")]).unwrap(),
            StatusCode::ACCEPTED
        );
        assert_eq!(
            status_for(&[r("ignored"), r("rejected")]).unwrap(),
            StatusCode::OK
        );
        assert_eq!(
            status_for(&[r("rejected")]).unwrap_err().metric_label(),
            "bad_request"
        );
    }

    #[test]
    fn errors_map_to_the_documented_statuses() {
        let transient = Error::Transient {
            op: "x",
            name: "y".into(),
            message: "z".into(),
        };
        assert_eq!(status_of(&transient), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            status_of(&Error::Overloaded { limit: 1 }),
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(
            status_of(&Error::PayloadTooLarge { limit: 1 }),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        let res = error_response(transient);
        assert_eq!(res.headers()[header::RETRY_AFTER], "2");
        assert_eq!(
            res.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
    }

    #[test]
    fn one_failed_signal_fails_the_request() {
        let e = summarize(vec![Ok(r("created")), Err(Error::Cancelled)]).unwrap_err();
        assert_eq!(status_of(&e), StatusCode::SERVICE_UNAVAILABLE);
        let e = summarize(vec![Ok(r("created")), Err(Error::Overloaded { limit: 3 })]).unwrap_err();
        assert_eq!(status_of(&e), StatusCode::TOO_MANY_REQUESTS);
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
            matches!(check_content_type(&h), Err(Error::UnsupportedMediaType(t)) if t == "text/plain")
        );
    }
}
