//! ApiCalls bounds and counts the Kubernetes requests made for one batch of signals.

use std::{
    future::Future,
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use crate::error::Error;

/// ApiCalls applies the per-call timeout and counts every request it sends.
#[derive(Debug)]
pub struct ApiCalls {
    timeout: Duration,
    count: AtomicU32,
}

impl ApiCalls {
    /// new starts a counter at zero with the given per-call timeout.
    #[must_use]
    pub fn new(timeout: Duration) -> ApiCalls {
        ApiCalls {
            timeout,
            count: AtomicU32::new(0),
        }
    }

    /// count is the number of requests sent so far.
    pub fn count(&self) -> u32 {
        self.count.load(Ordering::Relaxed)
    }

    /// timeout is the bound on each single call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// run sends one request, bounded by the timeout; kube errors keep their
    /// status so that callers can tell 404 and 409 apart.
    pub async fn run<T>(
        &self,
        op: &'static str,
        name: &str,
        fut: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<Result<T, kube::Error>, Error> {
        self.count.fetch_add(1, Ordering::Relaxed);
        tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| Error::timeout(op, name, self.timeout))
    }

    /// call is `run` for calls where every kube error is a failure of the request.
    pub async fn call<T>(
        &self,
        op: &'static str,
        name: &str,
        fut: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, Error> {
        self.run(op, name, fut)
            .await?
            .map_err(|e| Error::kube(op, name, &e))
    }
}

impl ApiCalls {
    /// read is `call` for idempotent reads: a transport failure (connection
    /// reset, refused) is retried twice after a short pause, since a read that
    /// never reached the server, or reached it, is equally safe to repeat.
    pub async fn read<T, F, Fut>(&self, op: &'static str, name: &str, mut f: F) -> Result<T, Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, kube::Error>>,
    {
        for attempt in 0..3u64 {
            match self.run(op, name, f()).await? {
                Ok(v) => return Ok(v),
                Err(e) if api_code(&e).is_none() && attempt < 2 => {
                    tracing::debug!(op, name, error = %e, "retrying read after transport error");
                    tokio::time::sleep(Duration::from_millis(20 * (attempt + 1))).await;
                }
                Err(e) => return Err(Error::kube(op, name, &e)),
            }
        }
        unreachable!("the last attempt always returns")
    }
}

/// api_code is the HTTP status of a Kubernetes API error, if it is one.
pub fn api_code(err: &kube::Error) -> Option<u16> {
    match err {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}
