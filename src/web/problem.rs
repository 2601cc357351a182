//! Problem maps every error to its HTTP status, in one place, and renders RFC 9457
//! problem documents. Alertmanager retries 5xx and drops every other failure, so a 4xx
//! must mean "this payload will never succeed".

use axum::{
    body::Body,
    http::{HeaderValue, StatusCode, header},
    response::Response,
};

use crate::{kube::KubeError, pipeline};

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
    #[error("{0}")]
    Unauthorized(String),
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
            Rejection::Unauthorized(_) => "unauthorized",
            Rejection::Pipeline(e) => e.metric_label(),
            Rejection::Kube(e) => e.metric_label(),
        }
    }
}

/// status_of is the single mapping from errors to HTTP statuses.
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
        Rejection::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        Rejection::Unauthorized(_) => StatusCode::UNAUTHORIZED,
        Rejection::Pipeline(pipeline::Error::Overloaded { .. }) => StatusCode::TOO_MANY_REQUESTS,
        Rejection::Pipeline(pipeline::Error::Kube(e)) | Rejection::Kube(e) => kube(e),
        Rejection::Pipeline(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// RETRY_AFTER_SECONDS is the hint sent with 429 and 503.
pub const RETRY_AFTER_SECONDS: u32 = 2;

/// error_response renders an error as a problem document with its status and headers.
pub fn error_response(e: Rejection) -> Response {
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
pub fn problem(code: StatusCode, detail: String) -> Response {
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
            "creating",
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
            (pipeline::Error::Overloaded { limit: 1 }.into(), 429),
            (Rejection::PayloadTooLarge { limit: 1 }, 413),
            (Rejection::Unauthorized("no".into()), 401),
            (pipeline::Error::Cancelled.into(), 503),
            (pipeline::Error::Kube(api_error(503)).into(), 503),
            (pipeline::Error::Kube(api_error(403)).into(), 500),
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
        let res = error_response(timeout);
        assert_eq!(res.headers()[header::RETRY_AFTER], "2");
        assert_eq!(
            res.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
    }
}
