//! Web is the HTTP adapter: the axum `Router` shared by every serve mode, request checks
//! (`auth`, content type, size), and the answers (`problem` maps every error to a status).

mod auth;
mod problem;

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use axum::{
    Json, Router,
    extract::{MatchedPath, Request, State},
    http::{HeaderMap, StatusCode, header},
    middleware,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use futures::{StreamExt, stream};
use serde::Serialize;

pub use auth::Auth;
use problem::{Rejection, error_response, problem};

use crate::{
    pipeline::{self, Disposition, Pipeline},
    signal::{self, Item, ParseContext, Source},
    telemetry::{self, kv},
};

/// AppState is what every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub pipeline: Arc<Pipeline>,
    pub auth: Arc<Auth>,
    pub client: kube::Client,
    pub api_timeout: std::time::Duration,
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
    match crate::kube::reachable(&s.client, s.api_timeout).await {
        Ok(()) => "ok".into_response(),
        Err(e) => problem(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("Kubernetes API not reachable: {e}"),
        ),
    }
}

async fn prometheus(State(s): State<AppState>, req: Request) -> Response {
    handle(s, req, Source::Alertmanager)
        .await
        .unwrap_or_else(error_response)
}

async fn kubernetes_event(State(s): State<AppState>, req: Request) -> Response {
    handle(s, req, Source::KubernetesEvent)
        .await
        .unwrap_or_else(error_response)
}

/// Status is what became of one alert or event.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Status {
    Created,
    Duplicate,
    Ignored,
    Rejected,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Duplicate => "duplicate",
            Status::Ignored => "ignored",
            Status::Rejected => "rejected",
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
}

async fn handle(s: AppState, req: Request, source: Source) -> Result<Response, Rejection> {
    s.auth.check(req.headers()).await?;
    check_content_type(req.headers())?;
    let body = read_body(req, s.max_body_bytes).await?;
    let ctx = ParseContext {
        cluster_id: s.cluster_id.clone(),
        received_time: jiff::Timestamp::now(),
    };
    let items = match source {
        Source::Alertmanager => signal::parse_alertmanager(&body, &ctx),
        Source::KubernetesEvent => signal::parse_event(&body, &ctx).map(|i| vec![i]),
    }
    .map_err(|e| Rejection::BadRequest(e.to_string()))?;

    let results: Vec<Result<SignalResult, Rejection>> = stream::iter(items)
        .map(|item| {
            let pipeline = Arc::clone(&s.pipeline);
            async move {
                match item {
                    Item::Signal(signal) => {
                        let fingerprint = Some(signal.fingerprint.to_string());
                        let outcome = pipeline.submit(signal).await?;
                        Ok(SignalResult {
                            status: match outcome.disposition {
                                Disposition::Created => Status::Created,
                                Disposition::Duplicate => Status::Duplicate,
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
                        status: Status::Ignored,
                        fingerprint: fingerprint.map(|f| f.to_string()),
                        remediation_request: None,
                        occurrence_count: None,
                        reason: Some(reason),
                    }),
                    Item::Rejected { reason } => Ok(SignalResult {
                        status: Status::Rejected,
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
    for r in &results {
        let status = r.as_ref().map_or("failed", |r| r.status.as_str());
        telemetry::metrics()
            .signals
            .add(1, &[kv("source", source.as_str()), kv("status", status)]);
    }
    let results = summarize(results)?;
    let code = status_for(&results)?;
    Ok((code, Json(serde_json::json!({ "results": results }))).into_response())
}

/// summarize fails the whole request if any signal failed: a 2xx promises
/// that every write it reports is durable. Retrying a group re-counts the
/// alerts that did succeed, which over-counts but never loses a signal.
fn summarize(
    results: Vec<Result<SignalResult, Rejection>>,
) -> Result<Vec<SignalResult>, Rejection> {
    let mut ok = Vec::with_capacity(results.len());
    let mut overloaded = None;
    for r in results {
        match r {
            Ok(r) => ok.push(r),
            Err(e @ Rejection::Pipeline(pipeline::Error::Overloaded { .. })) => {
                overloaded = Some(e);
            }
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
fn status_for(results: &[SignalResult]) -> Result<StatusCode, Rejection> {
    let any = |s: Status| results.iter().any(|r| r.status == s);
    if any(Status::Created) {
        Ok(StatusCode::CREATED)
    } else if any(Status::Duplicate) {
        Ok(StatusCode::ACCEPTED)
    } else if any(Status::Ignored) || results.is_empty() {
        Ok(StatusCode::OK)
    } else {
        let reasons: Vec<&str> = results.iter().filter_map(|r| r.reason.as_deref()).collect();
        Err(Rejection::BadRequest(format!(
            "no signal could be accepted: {}",
            reasons.join("; ")
        )))
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

    fn r(status: Status) -> SignalResult {
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
        assert_eq!(problem::status_of(&e), StatusCode::TOO_MANY_REQUESTS);
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
