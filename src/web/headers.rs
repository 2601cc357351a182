//! Headers gives every answer an `X-Request-ID` (the caller's, when it sent a usable one,
//! else a new UUID) and the usual security headers, and logs one line per answered signal
//! request with that id.

use std::time::Instant;

use axum::{
    extract::{MatchedPath, Request},
    http::{HeaderMap, HeaderName, HeaderValue, header},
    middleware::Next,
    response::Response,
};

/// REQUEST_ID is the header that correlates a request across sender, gateway and logs.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// MAX_REQUEST_ID is the longest caller-chosen request id kept (longer ones are replaced).
const MAX_REQUEST_ID: usize = 128;

/// SECURITY are the headers every answer carries: no sniffing, framing, referrers,
/// caching or active content. (`Strict-Transport-Security` belongs to a TLS listener.)
const SECURITY: [(HeaderName, &str); 5] = [
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::X_FRAME_OPTIONS, "DENY"),
    (
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; frame-ancestors 'none'",
    ),
    (header::REFERRER_POLICY, "no-referrer"),
    (header::CACHE_CONTROL, "no-store"),
];

/// request_id picks the caller's id when it is short visible ASCII, else makes one.
fn request_id(headers: &HeaderMap) -> HeaderValue {
    headers
        .get(&REQUEST_ID)
        .filter(|v| {
            let b = v.as_bytes();
            (1..=MAX_REQUEST_ID).contains(&b.len()) && b.iter().all(u8::is_ascii_graphic)
        })
        .cloned()
        .unwrap_or_else(|| {
            HeaderValue::from_str(&uuid::Uuid::new_v4().to_string())
                .unwrap_or(HeaderValue::from_static("invalid"))
        })
}

/// stamp is the middleware: the id goes on the current span, on the answer, and on the log
/// line of a signal request.
pub async fn stamp(req: Request, next: Next) -> Response {
    let id = request_id(req.headers());
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let method = req.method().clone();
    let shown = id.to_str().unwrap_or_default().to_owned();
    tracing::Span::current().record("request_id", shown.as_str());
    let start = Instant::now();
    let mut res = next.run(req).await;
    let headers = res.headers_mut();
    headers.insert(REQUEST_ID, id);
    for (name, value) in SECURITY {
        headers.insert(name, HeaderValue::from_static(value));
    }
    if let Some(route) = route.filter(|r| r.starts_with("/api/")) {
        tracing::info!(
            request_id = %shown,
            method = %method,
            route,
            status = res.status().as_u16(),
            duration_ms = start.elapsed().as_secs_f64() * 1000.0,
            "request answered"
        );
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_usable_caller_id_is_kept_and_anything_else_replaced() {
        let mut h = HeaderMap::new();
        h.insert(&REQUEST_ID, HeaderValue::from_static("am-7f3a"));
        assert_eq!(request_id(&h), "am-7f3a");
        h.insert(&REQUEST_ID, HeaderValue::from_static("has space"));
        let made = request_id(&h);
        assert_ne!(made, "has space");
        assert!(uuid::Uuid::parse_str(made.to_str().unwrap_or_default()).is_ok());
        let long = "x".repeat(MAX_REQUEST_ID + 1);
        h.insert(
            &REQUEST_ID,
            HeaderValue::from_str(&long).unwrap_or(made.clone()),
        );
        assert_ne!(request_id(&h), long.as_str());
        assert_ne!(request_id(&HeaderMap::new()), request_id(&HeaderMap::new()));
    }
}
