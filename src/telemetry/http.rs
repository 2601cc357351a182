//! Http is the HTTP server's middleware: it measures every request and opens the server
//! span of each signal request under the caller's W3C `traceparent`.

use std::time::Instant;

use axum::{
    extract::{MatchedPath, Request},
    middleware::Next,
    response::Response,
};
use opentelemetry::{
    propagation::{Extractor, TextMapPropagator as _},
    trace::TraceContextExt as _,
};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use super::metrics;

/// UNMATCHED is the `endpoint` of a request that matched no route (the path is not kept:
/// it is the sender's, unbounded).
const UNMATCHED: &str = "unmatched";

/// method names a request's method in its span and its `method` label: a known method, or
/// `_OTHER` (a bounded label set).
fn method(m: &http::Method) -> &'static str {
    match *m {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::HEAD => "HEAD",
        http::Method::PUT => "PUT",
        http::Method::DELETE => "DELETE",
        http::Method::PATCH => "PATCH",
        http::Method::OPTIONS => "OPTIONS",
        http::Method::CONNECT => "CONNECT",
        http::Method::TRACE => "TRACE",
        _ => "_OTHER",
    }
}

/// Headers reads the caller's trace context from a request's headers.
struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// http_server is the middleware around the router: it records `gateway.http.request.duration`
/// and, for the signal endpoints, opens the request's server span under the caller's W3C
/// `traceparent`, if any.
pub async fn http_server(req: Request, next: Next) -> Response {
    let method = method(req.method());
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let traced = route.as_deref().is_some_and(|r| r.starts_with("/api/"));
    let start = Instant::now();
    let res = if traced {
        let route = route.as_deref().unwrap_or_default();
        let span = tracing::info_span!(
            "http request",
            otel.name = format!("{method} {route}"),
            otel.kind = "server",
            http.request.method = method,
            http.route = route,
            http.response.status_code = tracing::field::Empty,
            // Set by `web::headers::stamp`, inside this span.
            request_id = tracing::field::Empty,
        );
        let parent = TraceContextPropagator::new().extract(&Headers(req.headers()));
        if parent.span().span_context().is_valid() {
            let _ = span.set_parent(parent);
        }
        let res = next.run(req).instrument(span.clone()).await;
        span.record("http.response.status_code", res.status().as_u16());
        res
    } else {
        next.run(req).await
    };
    metrics().served(
        route.unwrap_or_else(|| UNMATCHED.to_owned()),
        method,
        res.status().as_str(),
        start.elapsed().as_secs_f64(),
    );
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_methods_are_one_label() {
        assert_eq!(method(&http::Method::POST), "POST");
        assert_eq!(
            method(&http::Method::from_bytes(b"BREW").unwrap()),
            "_OTHER"
        );
    }
}
