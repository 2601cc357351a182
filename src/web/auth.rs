//! Auth checks the bearer token of callers of the signal endpoints.

use axum::http::{HeaderMap, header};
use kube::Client;

use super::problem::Rejection;
use crate::{
    config::AuthMode,
    kube::{ApiCalls, review_token},
};

/// Auth is the configured way of authenticating callers.
pub enum Auth {
    None,
    /// Bearer compares the token with a shared secret.
    Bearer(String),
    /// TokenReview asks the API server whether the token is valid (a
    /// ServiceAccount token, or any token the cluster accepts).
    TokenReview {
        client: Client,
        calls_timeout: std::time::Duration,
    },
}

impl Auth {
    /// new builds the authenticator for `mode`.
    #[must_use]
    pub fn new(mode: &AuthMode, client: Client, calls_timeout: std::time::Duration) -> Auth {
        match mode {
            AuthMode::None => Auth::None,
            AuthMode::Bearer(t) => Auth::Bearer(t.clone()),
            AuthMode::TokenReview => Auth::TokenReview {
                client,
                calls_timeout,
            },
        }
    }

    /// check succeeds if the request carries acceptable credentials.
    pub async fn check(&self, headers: &HeaderMap) -> Result<(), Rejection> {
        if matches!(self, Auth::None) {
            return Ok(());
        }
        let token = bearer(headers)?;
        match self {
            Auth::None => Ok(()),
            Auth::Bearer(expected) if constant_time_eq(expected.as_bytes(), token.as_bytes()) => {
                Ok(())
            }
            Auth::Bearer(_) => Err(Rejection::Unauthorized("invalid bearer token".into())),
            Auth::TokenReview {
                client,
                calls_timeout,
            } => {
                let calls = ApiCalls::new(*calls_timeout);
                let status = review_token(client, token, &calls).await?;
                if status.authenticated == Some(true) {
                    Ok(())
                } else {
                    Err(Rejection::Unauthorized(format!(
                        "token rejected by TokenReview{}",
                        status.error.map(|e| format!(": {e}")).unwrap_or_default()
                    )))
                }
            }
        }
    }
}

fn bearer(headers: &HeaderMap) -> Result<&str, Rejection> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| Rejection::Unauthorized("missing Authorization header".into()))?;
    let value = value
        .to_str()
        .map_err(|_| Rejection::Unauthorized("Authorization header is not ASCII".into()))?;
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(token.trim())
        }
        _ => Err(Rejection::Unauthorized(
            "Authorization header is not 'Bearer <token>'".into(),
        )),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[tokio::test]
    async fn bearer_mode_needs_the_exact_token() {
        let auth = Auth::Bearer("s3cret".into());
        let mut h = HeaderMap::new();
        assert!(
            matches!(auth.check(&h).await, Err(Rejection::Unauthorized(m)) if m.contains("missing"))
        );
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer wrong!"),
        );
        assert!(auth.check(&h).await.is_err());
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic s3cret"),
        );
        assert!(auth.check(&h).await.is_err());
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer s3cret"),
        );
        assert!(auth.check(&h).await.is_ok());
    }
}
