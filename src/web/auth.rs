//! Auth decides whether a caller of the signal endpoints may send signals: a shared secret
//! (`bearer`), or a TokenReview for the gateway's own audience followed by a
//! SubjectAccessReview (`tokenreview`). Decisions are cached by token digest for a short
//! time; API failures are never cached, and reviews of unknown tokens are rate limited
//! before they cost an API call.
//!
//! With a client CA (`GATEWAY_TLS_CLIENT_CA_FILE`), a client certificate the TLS
//! handshake verified against it is a third way in, whatever the mode: the CA is the
//! authorization, so it should issue certificates to senders only. Requests without one
//! need the mode's credential; `clientcert` mode has none, and refuses them.

use std::{
    net::SocketAddr,
    num::NonZeroU32,
    num::NonZeroUsize,
    path::{Path, PathBuf},
    sync::Mutex,
    time::{Duration, Instant, SystemTime},
};

use axum::http::{HeaderMap, header};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use kube::Client;
use lru::LruCache;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use super::{ClientCert, problem::Rejection};
use crate::{
    audit::Caller,
    config::{AuthMode, Review, SecretSource},
    k8s::{ApiCalls, Permission, may_create, review_token},
};

/// CACHE_ENTRIES bounds the decisions remembered (one per distinct token).
const CACHE_ENTRIES: usize = 4096;
/// REVIEWS_PER_SECOND bounds the reviews of tokens not in the cache; successes are cached,
/// so in practice this limits failed authentications.
const REVIEWS_PER_SECOND: u32 = 20;
/// REVIEW_BURST is how many uncached reviews may come at once.
const REVIEW_BURST: u32 = 50;

/// Digest is the SHA-256 of a token; tokens themselves are never kept or logged.
type Digest = [u8; 32];

fn digest(token: &str) -> Digest {
    Sha256::digest(token.as_bytes()).into()
}

/// Auth is the configured way of authenticating and authorizing callers.
pub enum Auth {
    None,
    /// Bearer compares the token with a shared secret.
    Bearer(BearerSecret),
    /// TokenReview asks the API server who the caller is and whether it may send signals.
    TokenReview(Box<Reviewer>),
    /// ClientCert lets in only callers whose client certificate the handshake verified.
    ClientCert,
}

impl Auth {
    /// new builds the authenticator for `mode`; `namespace` is where callers need the permission.
    #[must_use]
    pub fn new(mode: &AuthMode, client: Client, namespace: &str, calls_timeout: Duration) -> Auth {
        match mode {
            AuthMode::None => Auth::None,
            AuthMode::ClientCert => Auth::ClientCert,
            AuthMode::Bearer(source) => Auth::Bearer(BearerSecret::new(source.clone())),
            AuthMode::TokenReview(review) => Auth::TokenReview(Box::new(Reviewer::new(
                client,
                review,
                namespace,
                calls_timeout,
            ))),
        }
    }

    /// check succeeds with the caller if the request carries credentials of a caller that
    /// may send signals: a verified client certificate (named by it), the TokenReview's
    /// user, or an anonymous caller in `bearer` and `none` modes, which learn no identity.
    pub async fn check(
        &self,
        headers: &HeaderMap,
        peer: Option<SocketAddr>,
        cert: Option<&ClientCert>,
    ) -> Result<Caller, Rejection> {
        if let Some(cert) = cert {
            return Ok(Caller::authenticated(&cert.name));
        }
        let result = match self {
            Auth::None => return Ok(Caller::anonymous()),
            Auth::ClientCert => Err(Rejection::Unauthorized(
                "a client certificate issued by the gateway's client CA is required".into(),
            )),
            Auth::Bearer(secret) => bearer(headers)
                .and_then(|token| secret.check(token))
                .map(|()| Caller::anonymous()),
            Auth::TokenReview(reviewer) => match bearer(headers) {
                Ok(token) => reviewer.check(token).await,
                Err(e) => Err(e),
            },
        };
        if let Err(e @ (Rejection::Unauthorized(_) | Rejection::Forbidden(_))) = &result {
            let peer = peer.map_or_else(|| "unknown".to_owned(), |p| p.to_string());
            tracing::warn!(peer = %peer, reason = %e, "caller refused");
        }
        result
    }
}

/// Stamp identifies one version of a mounted file (a mounted Secret is replaced by a
/// symlink swap, which changes the inode).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    #[cfg(unix)]
    ino: u64,
}

pub(super) fn stamp(path: &Path) -> std::io::Result<Stamp> {
    let meta = std::fs::metadata(path)?;
    Ok(Stamp {
        modified: meta.modified().ok(),
        len: meta.len(),
        #[cfg(unix)]
        ino: std::os::unix::fs::MetadataExt::ino(&meta),
    })
}

/// BearerSecret is the shared secret of `bearer` mode, kept as a digest and re-read when
/// its file changes.
pub struct BearerSecret {
    path: Option<PathBuf>,
    current: Mutex<(Digest, Option<Stamp>)>,
}

impl BearerSecret {
    /// new loads the secret; configuration already refused an empty or unreadable one.
    #[must_use]
    pub fn new(source: SecretSource) -> BearerSecret {
        match source {
            SecretSource::Value(v) => BearerSecret {
                path: None,
                current: Mutex::new((digest(v.trim()), None)),
            },
            SecretSource::File(path) => {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let loaded = (digest(text.trim()), stamp(&path).ok());
                BearerSecret {
                    path: Some(path),
                    current: Mutex::new(loaded),
                }
            }
        }
    }

    /// current returns the secret's digest, re-reading the file first if it changed. A file
    /// that became empty or unreadable keeps the previous secret.
    fn current(&self) -> Digest {
        let mut current = self
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(path) = &self.path else {
            return current.0;
        };
        let now = stamp(path).ok();
        if now.is_some() && now != current.1 {
            match std::fs::read_to_string(path) {
                Ok(text) if !text.trim().is_empty() => {
                    *current = (digest(text.trim()), now);
                    tracing::info!(file = %path.display(), "bearer secret reloaded");
                }
                _ => {
                    current.1 = now;
                    tracing::warn!(
                        file = %path.display(),
                        "bearer secret file is empty or unreadable; keeping the previous secret"
                    );
                }
            }
        }
        current.0
    }

    fn check(&self, token: &str) -> Result<(), Rejection> {
        let expected = self.current();
        if bool::from(digest(token).ct_eq(&expected)) {
            Ok(())
        } else {
            Err(Rejection::Unauthorized("invalid bearer token".into()))
        }
    }
}

/// Decision is a cacheable answer about one token.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Decision {
    /// Allowed carries who the caller is, for the audit events of its signals.
    Allowed(Caller),
    /// The token is invalid, expired or not meant for this audience.
    Unauthenticated,
    /// The caller is authenticated but may not send signals.
    Forbidden,
}

/// Reviewer runs TokenReview + SubjectAccessReview with a bounded cache and a rate limit.
pub struct Reviewer {
    client: Client,
    calls_timeout: Duration,
    audience: Option<String>,
    permission: Permission,
    ttl: Duration,
    cache: Mutex<LruCache<Digest, (Instant, Decision)>>,
    limiter: DefaultDirectRateLimiter,
}

impl Reviewer {
    fn new(client: Client, review: &Review, namespace: &str, calls_timeout: Duration) -> Reviewer {
        let quota =
            Quota::per_second(NonZeroU32::new(REVIEWS_PER_SECOND).unwrap_or(NonZeroU32::MIN))
                .allow_burst(NonZeroU32::new(REVIEW_BURST).unwrap_or(NonZeroU32::MIN));
        Reviewer {
            client,
            calls_timeout,
            audience: review.audience.clone(),
            permission: Permission {
                namespace: namespace.to_owned(),
                group: review.group.clone(),
                resource: review.resource.clone(),
                name: review.name.clone(),
            },
            ttl: review.cache_ttl,
            cache: Mutex::new(LruCache::new(
                NonZeroUsize::new(CACHE_ENTRIES).unwrap_or(NonZeroUsize::MIN),
            )),
            limiter: RateLimiter::direct(quota),
        }
    }

    fn cached(&self, key: &Digest) -> Option<Decision> {
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match cache.get(key) {
            Some((at, decision)) if at.elapsed() < self.ttl => Some(decision.clone()),
            Some(_) => {
                cache.pop(key);
                None
            }
            None => None,
        }
    }

    async fn check(&self, token: &str) -> Result<Caller, Rejection> {
        let key = digest(token);
        let decision = match self.cached(&key) {
            Some(decision) => decision,
            None => {
                if self.limiter.check().is_err() {
                    return Err(Rejection::AuthThrottled);
                }
                let decision = self.review(token).await?;
                if !self.ttl.is_zero() {
                    self.cache
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .put(key, (Instant::now(), decision.clone()));
                }
                decision
            }
        };
        match decision {
            Decision::Allowed(caller) => Ok(caller),
            Decision::Unauthenticated => Err(Rejection::Unauthorized(
                "the token is invalid, expired, or not issued for this gateway's audience".into(),
            )),
            Decision::Forbidden => Err(Rejection::Forbidden(format!(
                "the caller may not create {} in namespace {}",
                resource_name(&self.permission),
                self.permission.namespace
            ))),
        }
    }

    /// review asks the API server; failures of the API are errors (503), never decisions.
    async fn review(&self, token: &str) -> Result<Decision, Rejection> {
        let calls = ApiCalls::new(self.calls_timeout);
        let unavailable = |e| {
            tracing::warn!(error = %e, "reviewing a caller failed");
            Rejection::AuthUnavailable
        };
        let status = review_token(&self.client, token, self.audience.as_deref(), &calls)
            .await
            .map_err(unavailable)?;
        // With no audience of our own, the API server judged the token for itself.
        let audience_ok = self
            .audience
            .as_ref()
            .is_none_or(|mine| status.audiences.as_ref().is_some_and(|a| a.contains(mine)));
        let user = match status.user {
            Some(user) if status.authenticated == Some(true) && audience_ok => user,
            _ => {
                // The API server's message may name ServiceAccounts: logged, never answered.
                tracing::info!(
                    error = status.error.as_deref().unwrap_or(""),
                    authenticated = status.authenticated == Some(true),
                    audience_ok,
                    "token review refused the caller"
                );
                return Ok(Decision::Unauthenticated);
            }
        };
        let allowed = may_create(&self.client, &user, &self.permission, &calls)
            .await
            .map_err(unavailable)?;
        if allowed {
            Ok(Decision::Allowed(Caller::authenticated(
                user.username.as_deref().unwrap_or_default(),
            )))
        } else {
            tracing::info!(
                user = user.username.as_deref().unwrap_or(""),
                "caller lacks the permission to send signals"
            );
            Ok(Decision::Forbidden)
        }
    }
}

fn resource_name(p: &Permission) -> String {
    let resource = if p.group.is_empty() {
        p.resource.clone()
    } else {
        format!("{}.{}", p.resource, p.group)
    };
    match &p.name {
        Some(name) => format!("{resource} {name}"),
        None => resource,
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

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with_token(token: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_static(token));
        h
    }

    #[tokio::test]
    async fn bearer_mode_needs_the_exact_token() {
        let auth = Auth::Bearer(BearerSecret::new(SecretSource::Value("s3cret\n".into())));
        assert!(
            matches!(auth.check(&HeaderMap::new(), None, None).await, Err(Rejection::Unauthorized(m)) if m.contains("missing"))
        );
        assert!(
            auth.check(&with_token("Bearer wrong!"), None, None)
                .await
                .is_err()
        );
        assert!(
            auth.check(&with_token("Bearer s3cre"), None, None)
                .await
                .is_err()
        );
        assert!(
            auth.check(&with_token("Basic s3cret"), None, None)
                .await
                .is_err()
        );
        // A shared secret names nobody: the caller's signals are audited as `external`.
        assert_eq!(
            auth.check(&with_token("bearer s3cret"), None, None)
                .await
                .ok(),
            Some(Caller::anonymous())
        );
        assert_eq!(
            Auth::None.check(&HeaderMap::new(), None, None).await.ok(),
            Some(Caller::anonymous())
        );
    }

    #[tokio::test]
    async fn a_verified_client_certificate_authenticates_in_every_mode() {
        let cert = ClientCert {
            name: "alertmanager-eu1".into(),
        };
        let named = Caller::authenticated("alertmanager-eu1");
        let bearer = Auth::Bearer(BearerSecret::new(SecretSource::Value("s3cret".into())));
        for auth in [&bearer, &Auth::ClientCert] {
            assert_eq!(
                auth.check(&HeaderMap::new(), None, Some(&cert)).await.ok(),
                Some(named.clone())
            );
        }
        // Without one, bearer mode wants its token, and clientcert mode refuses.
        assert!(
            bearer
                .check(&with_token("Bearer s3cret"), None, None)
                .await
                .is_ok()
        );
        assert!(
            matches!(Auth::ClientCert.check(&with_token("Bearer s3cret"), None, None).await, Err(Rejection::Unauthorized(m)) if m.contains("client certificate"))
        );
    }

    #[tokio::test]
    async fn bearer_secret_files_are_trimmed_and_reloaded_when_they_change() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "first\n").unwrap();
        let auth = Auth::Bearer(BearerSecret::new(SecretSource::File(file.clone())));
        assert!(
            auth.check(&with_token("Bearer first"), None, None)
                .await
                .is_ok()
        );

        // A Secret update replaces the file (a new inode), as the kubelet's symlink swap does.
        let next = dir.path().join("token.new");
        std::fs::write(&next, "second-secret\n").unwrap();
        std::fs::rename(&next, &file).unwrap();
        assert!(
            auth.check(&with_token("Bearer first"), None, None)
                .await
                .is_err()
        );
        assert!(
            auth.check(&with_token("Bearer second-secret"), None, None)
                .await
                .is_ok()
        );

        // Emptied by mistake: the previous secret stays.
        std::fs::write(&next, "  \n").unwrap();
        std::fs::rename(&next, &file).unwrap();
        assert!(
            auth.check(&with_token("Bearer second-secret"), None, None)
                .await
                .is_ok()
        );
    }
}
