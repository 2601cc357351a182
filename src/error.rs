//! Error is the one error type of the request path; `http` maps it to a status.

use std::time::Duration;

/// Error says why a signal could not be accepted, and whether a retry can help.
#[derive(Clone, Debug, thiserror::Error)]
pub enum Error {
    /// The payload can never succeed (malformed, not v4, no usable alert).
    #[error("{0}")]
    BadRequest(String),
    #[error("content type must be application/json, got '{0}'")]
    UnsupportedMediaType(String),
    #[error("request body exceeds the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("{0}")]
    Unauthorized(String),
    #[error("too many signals in flight (limit {limit}); retry later")]
    Overloaded { limit: usize },
    /// A Kubernetes API call failed in a way a later retry may fix.
    #[error("{op} {name}: {message}")]
    Transient {
        op: &'static str,
        name: String,
        message: String,
    },
    /// A Kubernetes API call failed in a way that needs an operator (RBAC, CRD missing).
    #[error("{op} {name}: {message}")]
    Api {
        op: &'static str,
        name: String,
        message: String,
    },
    #[error("lease {lease} still held by another writer after waiting {waited:?}")]
    LockBusy { lease: String, waited: Duration },
    #[error("{0}")]
    Contention(String),
    #[error("the gateway is shutting down")]
    ShuttingDown,
    #[error("the request was cancelled")]
    Cancelled,
}

impl Error {
    /// kube wraps a failed Kubernetes call, sorting it into transient or not.
    pub fn kube(op: &'static str, name: &str, err: &kube::Error) -> Error {
        let name = name.to_owned();
        match err {
            kube::Error::Api(status) => {
                let message = format!("{} ({})", status.message, status.code);
                match status.code {
                    401 | 403 | 404 | 422 | 400 => Error::Api { op, name, message },
                    _ => Error::Transient { op, name, message },
                }
            }
            other => Error::Transient {
                op,
                name,
                message: other.to_string(),
            },
        }
    }

    /// timeout is the error of a Kubernetes call that did not answer in time.
    pub fn timeout(op: &'static str, name: &str, after: Duration) -> Error {
        Error::Transient {
            op,
            name: name.to_owned(),
            message: format!("no answer within {after:?}"),
        }
    }

    /// metric_label is a short constant naming the error class.
    #[must_use]
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::BadRequest(_) => "bad_request",
            Error::UnsupportedMediaType(_) => "unsupported_media_type",
            Error::PayloadTooLarge { .. } => "payload_too_large",
            Error::Unauthorized(_) => "unauthorized",
            Error::Overloaded { .. } => "overloaded",
            Error::Transient { .. } => "api_transient",
            Error::Api { .. } => "api",
            Error::LockBusy { .. } => "lock_busy",
            Error::Contention(_) => "contention",
            Error::ShuttingDown => "shutting_down",
            Error::Cancelled => "cancelled",
        }
    }
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
        for code in [429, 500, 502, 503, 504] {
            let e = Error::kube("listing", "x", &api_error(code));
            assert!(matches!(e, Error::Transient { .. }), "{code}: {e:?}");
        }
    }

    #[test]
    fn rbac_and_schema_failures_need_an_operator() {
        for code in [401, 403, 404, 422] {
            let e = Error::kube("creating", "x", &api_error(code));
            assert!(matches!(e, Error::Api { .. }), "{code}: {e:?}");
            assert!(e.to_string().contains("creating x"), "{e}");
        }
    }
}
