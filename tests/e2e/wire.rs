//! kubernaut's Gateway on the wire, against the real API server: the answer's top-level
//! fields for one signal (created, duplicate with its `metadata`), the summary for several,
//! `X-Request-ID` echoed or generated, the security headers, and JSON health answers.

use axum::{
    Router,
    body::Body,
    http::{HeaderMap, Request, StatusCode},
};
use serde_json::Value;

use crate::support::{PROMETHEUS, alert, firing, in_process, oneshot, plane, webhook};

/// request sends `body` to `path` with `headers` and returns status, headers and JSON body.
async fn request(
    app: &Router,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: String,
) -> (StatusCode, HeaderMap, Value) {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    oneshot(app, req.body(Body::from(body)).expect("a request")).await
}

#[tokio::test]
async fn one_signal_is_answered_with_kubernauts_fields() {
    let cp = plane().await;
    let ns = cp.new_namespace().await.expect("a namespace");
    let ns = ns.name();
    let app = in_process(cp, ns, &[]).await;
    let (status, _, created) = request(&app, "POST", PROMETHEUS, &[], firing("wire-0")).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["status"], "created");
    assert_eq!(created["duplicate"], false);
    assert_eq!(
        created["message"],
        "RemediationRequest CRD created successfully"
    );
    assert_eq!(created["remediationRequestNamespace"], ns);
    let name = created["remediationRequestName"].as_str().expect("a name");
    assert!(name.starts_with("rr-"), "{created}");
    assert_eq!(created["fingerprint"], created["results"][0]["fingerprint"]);

    let (status, _, dup) = request(&app, "POST", PROMETHEUS, &[], firing("wire-0")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{dup}");
    assert_eq!(
        (&dup["status"], &dup["duplicate"]),
        (&"duplicate".into(), &true.into())
    );
    assert_eq!(dup["remediationRequestName"], name);
    let meta = &dup["metadata"];
    assert_eq!(meta["count"], 2, "{dup}");
    assert_eq!(meta["remediationRequestRef"], format!("{ns}/{name}"));
    let first: jiff::Timestamp = meta["firstOccurrence"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .expect("firstOccurrence, RFC 3339");
    let last: jiff::Timestamp = meta["lastOccurrence"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .expect("lastOccurrence, RFC 3339");
    assert!(first <= last, "{dup}");

    let several = webhook(vec![alert("wire-0", "firing"), alert("wire-1", "firing")]);
    let (status, _, body) = request(&app, "POST", PROMETHEUS, &[], several).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert!(
        body.get("status").is_none(),
        "several signals: no top-level status"
    );
    assert_eq!(body["summary"]["total"], 2);
    assert_eq!(body["summary"]["created"], 1);
    assert_eq!(body["summary"]["deduplicated"], 1);
}

#[tokio::test]
async fn answers_carry_a_request_id_and_the_security_headers() {
    let cp = plane().await;
    let ns = cp.new_namespace().await.expect("a namespace");
    let app = in_process(cp, ns.name(), &[]).await;
    let (_, headers, _) = request(
        &app,
        "POST",
        PROMETHEUS,
        &[("x-request-id", "am-1234")],
        firing("wire-id"),
    )
    .await;
    assert_eq!(
        headers["x-request-id"], "am-1234",
        "a caller's id is echoed"
    );
    for (name, value) in [
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        ("cache-control", "no-store"),
    ] {
        assert_eq!(headers[name], value, "{name}");
    }
    assert!(
        headers["content-security-policy"]
            .to_str()
            .is_ok_and(|v| v.starts_with("default-src 'none'"))
    );
    // Without one, each answer gets its own (a UUID), errors and health answers included.
    let (status, a, _) = request(&app, "POST", PROMETHEUS, &[], "{".into()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (_, b, _) = request(&app, "GET", "/healthz", &[], String::new()).await;
    let id = |h: &HeaderMap| h["x-request-id"].to_str().unwrap_or_default().to_owned();
    assert!(uuid::Uuid::parse_str(&id(&a)).is_ok(), "{a:?}");
    assert_ne!(id(&a), id(&b));
    assert_eq!(b["x-frame-options"], "DENY");
}

#[tokio::test]
async fn health_answers_are_json_as_kubernauts() {
    let cp = plane().await;
    let ns = cp.new_namespace().await.expect("a namespace");
    let app = in_process(cp, ns.name(), &[]).await;
    let (status, _, health) = request(&app, "GET", "/healthz", &[], String::new()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(health["status"], "healthy");
    let at: jiff::Timestamp = health["timestamp"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .expect("an RFC 3339 timestamp");
    assert!((jiff::Timestamp::now() - at).get_seconds().abs() < 60);
    let (status, _, ready) = request(&app, "GET", "/readyz", &[], String::new()).await;
    assert_eq!(
        (status, &ready["status"]),
        (StatusCode::OK, &"ready".into())
    );
}
