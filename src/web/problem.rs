//! Problem maps every error to its HTTP status, in one place, and renders RFC 9457
//! problem documents. Alertmanager retries 5xx and drops every other failure, so a 4xx
//! must mean "this payload will never succeed".

use axum::{
    body::Body,
    http::{HeaderValue, StatusCode, header},
    response::Response,
};

use crate::{
    k8s::{CREATE_RR, KubeError},
    pipeline,
};

/// Rejection is why a request was not (or not wholly) accepted.
#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    /// The payload can never succeed (malformed, not v4, no usable alert).
    #[error("{0}")]
    BadRequest(String),
    #[error("content type must be application/json, got '{0}'")]
    UnsupportedMediaType(String),
    #[error("request body exceeds the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// More alerts in one notification than `GATEWAY_MAX_ALERTS`.
    #[error("{0}")]
    TooManyAlerts(String),
    #[error("{0}")]
    Unauthorized(String),
    /// The caller is authenticated but may not send signals.
    #[error("{0}")]
    Forbidden(String),
    /// Too many reviews of unknown tokens; a legitimate sender's retry succeeds.
    #[error("too many unauthenticated requests; retry later")]
    AuthThrottled,
    /// The API server could not review the caller (its message is logged, not answered).
    #[error("cannot authenticate callers right now; retry later")]
    AuthUnavailable,
    /// Requests in progress reached `GATEWAY_MAX_IN_FLIGHT`.
    #[error("too many requests in progress (limit {limit}); retry later")]
    Busy { limit: usize },
    #[error("the request took longer than {after:?}; retry later")]
    Timeout { after: std::time::Duration },
    #[error(transparent)]
    Pipeline(#[from] pipeline::Error),
    /// A Kubernetes call of the web layer itself (TokenReview, readiness) failed.
    #[error(transparent)]
    Kube(#[from] KubeError),
}

impl Rejection {
    fn metric_label(&self) -> &'static str {
        match self {
            Rejection::BadRequest(_) => "bad_request",
            Rejection::UnsupportedMediaType(_) => "unsupported_media_type",
            Rejection::PayloadTooLarge { .. } => "payload_too_large",
            Rejection::TooManyAlerts(_) => "too_many_alerts",
            Rejection::Unauthorized(_) => "unauthorized",
            Rejection::Forbidden(_) => "forbidden",
            Rejection::AuthThrottled => "auth_throttled",
            Rejection::AuthUnavailable => "auth_unavailable",
            Rejection::Busy { .. } => "busy",
            Rejection::Timeout { .. } => "timeout",
            Rejection::Pipeline(e) => e.metric_label(),
            Rejection::Kube(e) => e.metric_label(),
        }
    }
}

/// rejects_object reports a per-signal failure that no retry can fix: the API server refused
/// the RR itself (invalid, too large) or a quota forbids it. Such a signal is reported as
/// `failed` and the rest of its group still answered 2xx, so that retries of the group do
/// not count the others again forever.
#[must_use]
pub fn rejects_object(e: &pipeline::Error) -> bool {
    // Only the create of this signal's RR refuses *this* signal; a 4xx from any other call
    // (a 403 quota on Leases, a 422 on a status write) is the gateway's own problem.
    let pipeline::Error::Kube(KubeError::Failed { op, source, .. }) = e else {
        return false;
    };
    if *op != CREATE_RR {
        return false;
    }
    match source.as_ref() {
        kube::Error::Api(s) => {
            matches!(s.code, 400 | 413 | 422)
                || (s.code == 403 && s.message.contains("exceeded quota"))
        }
        _ => false,
    }
}

/// status_of is the single mapping from errors to HTTP statuses. Overload is 503, never
/// 429: Alertmanager drops a 4xx, and an overloaded gateway must not lose a signal.
#[must_use]
pub fn status_of(e: &Rejection) -> StatusCode {
    let kube = |e: &KubeError| {
        if e.needs_operator() {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        }
    };
    match e {
        Rejection::BadRequest(_) => StatusCode::BAD_REQUEST,
        Rejection::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        Rejection::PayloadTooLarge { .. } | Rejection::TooManyAlerts(_) => {
            StatusCode::PAYLOAD_TOO_LARGE
        }
        Rejection::Unauthorized(_) => StatusCode::UNAUTHORIZED,
        Rejection::Forbidden(_) => StatusCode::FORBIDDEN,
        Rejection::AuthThrottled
        | Rejection::AuthUnavailable
        | Rejection::Busy { .. }
        | Rejection::Timeout { .. } => StatusCode::SERVICE_UNAVAILABLE,
        Rejection::Pipeline(pipeline::Error::Kube(e)) | Rejection::Kube(e) => kube(e),
        Rejection::Pipeline(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// MAX_DETAIL_BYTES bounds the `detail` of every problem document (and its log line).
pub const MAX_DETAIL_BYTES: usize = 768;

/// RETRY_AFTER_SECONDS is the hint sent with a 503.
pub const RETRY_AFTER_SECONDS: u32 = 2;

/// error_response renders an error as a problem document with its status and headers.
pub fn error_response(e: Rejection) -> Response {
    let code = status_of(&e);
    let detail = bounded(e.to_string());
    if code.is_server_error() {
        tracing::warn!(error = %detail, kind = e.metric_label(), status = code.as_u16(), "request failed");
    } else {
        tracing::info!(error = %detail, kind = e.metric_label(), status = code.as_u16(), "request refused");
    }
    let mut res = problem(code, detail);
    if code == StatusCode::SERVICE_UNAVAILABLE {
        res.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
    }
    if code == StatusCode::UNAUTHORIZED {
        res.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    res
}

/// bounded cuts a detail to `MAX_DETAIL_BYTES`, on a character boundary.
#[must_use]
pub fn bounded(mut detail: String) -> String {
    if detail.len() > MAX_DETAIL_BYTES {
        let mut end = MAX_DETAIL_BYTES;
        while !detail.is_char_boundary(end) {
            end -= 1;
        }
        detail.truncate(end);
        detail.push_str("...");
    }
    detail
}

/// problem renders an RFC 9457 problem document; the detail is bounded.
pub fn problem(code: StatusCode, detail: String) -> Response {
    let detail = bounded(detail);
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
    use std::time::Duration;

    fn api_error(code: u16) -> KubeError {
        KubeError::failed(
            CREATE_RR,
            "x",
            kube::Error::Api(
                kube::core::Status::failure("boom", "Reason")
                    .with_code(code)
                    .boxed(),
            ),
        )
    }

    #[test]
    fn errors_map_to_the_documented_statuses() {
        let timeout = Rejection::Kube(KubeError::Timeout {
            op: "x",
            name: "y".into(),
            after: Duration::from_secs(1),
        });
        assert_eq!(status_of(&timeout), StatusCode::SERVICE_UNAVAILABLE);
        let cases = [
            (pipeline::Error::Overloaded { limit: 1 }.into(), 503),
            (Rejection::Busy { limit: 1 }, 503),
            (Rejection::AuthThrottled, 503),
            (Rejection::AuthUnavailable, 503),
            (Rejection::Forbidden("no".into()), 403),
            (Rejection::TooManyAlerts("x".into()), 413),
            (Rejection::PayloadTooLarge { limit: 1 }, 413),
            (Rejection::Unauthorized("no".into()), 401),
            (pipeline::Error::Cancelled.into(), 503),
            (pipeline::Error::Kube(api_error(503)).into(), 503),
            (pipeline::Error::Kube(api_error(403)).into(), 500),
            (pipeline::Error::Kube(api_error(404)).into(), 500),
            (
                pipeline::Error::LockBusy {
                    lease: "sg-x".into(),
                    waited: Duration::from_secs(5),
                }
                .into(),
                503,
            ),
        ];
        for (e, code) in cases {
            assert_eq!(status_of(&e).as_u16(), code, "{e}");
        }
        assert!(bounded("é".repeat(1000)).len() <= MAX_DETAIL_BYTES + 3);
        let res = error_response(timeout);
        assert_eq!(res.headers()[header::RETRY_AFTER], "2");
        assert_eq!(
            res.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
    }

    #[test]
    fn only_the_create_of_a_signals_rr_rejects_the_signal() {
        for (code, permanent) in [
            (422, true),
            (400, true),
            (403, false),
            (503, false),
            (409, false),
        ] {
            assert_eq!(
                rejects_object(&pipeline::Error::Kube(api_error(code))),
                permanent,
                "{code}"
            );
        }
        let quota = |op| {
            KubeError::failed(
                op,
                "x",
                kube::Error::Api(
                    kube::core::Status::failure(
                        "remediationrequests \"x\" is forbidden: exceeded quota: q",
                        "Forbidden",
                    )
                    .with_code(403)
                    .boxed(),
                ),
            )
        };
        assert!(rejects_object(&pipeline::Error::Kube(quota(CREATE_RR))));
        // The same refusals from any other call are the gateway's problem, not the signal's.
        assert!(!rejects_object(&pipeline::Error::Kube(quota(
            "claiming lease"
        ))));
        let other = KubeError::failed(
            "updating remediationrequest status",
            "x",
            kube::Error::Api(
                kube::core::Status::failure("bad", "Invalid")
                    .with_code(422)
                    .boxed(),
            ),
        );
        assert!(!rejects_object(&pipeline::Error::Kube(other.clone())));
        assert_eq!(
            status_of(&pipeline::Error::Kube(other).into()).as_u16(),
            500
        );
    }
}
