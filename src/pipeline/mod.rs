//! Pipeline takes signals from the web layer to Kubernetes: the `coalescer` batches them
//! per fingerprint, the `writer` counts each batch on the active RR or creates the next
//! one under the fingerprint's fence record.
//!
//! Kubernetes API requests per batch (when the process has seen the fingerprint before;
//! the first time adds one read of the record):
//!
//! | path | requests |
//! |---|---|
//! | duplicate | get RR, status patch |
//! | new RR (locking on or off) | get RR (or record), claim record, create RR, status patch |
//!
//! The lock adds no request: a claim whose RR exists needs no release (`writer`).

mod coalescer;
mod writer;

use std::{sync::Arc, time::Duration};

use tracing::Instrument as _;

use crate::{
    kube::{ApiCalls, KubeError},
    signal::{Fingerprint, Signal},
    telemetry,
};
use coalescer::{Batch, Coalescer, Refused};
pub(crate) use writer::Writer;
pub use writer::rr_name;

/// Disposition says what became of one accepted signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disposition {
    Created,
    Duplicate,
}

/// Outcome is the durable result of one signal.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub disposition: Disposition,
    /// `<namespace>/<name>` of the RR that counts this signal.
    pub remediation_request: String,
    pub occurrence_count: i64,
}

/// Error says why a signal was not counted; every kind can succeed on a later retry,
/// except a `Kube` error that needs an operator.
#[derive(Clone, Debug, thiserror::Error)]
pub enum Error {
    #[error("too many signals in flight (limit {limit}); retry later")]
    Overloaded { limit: usize },
    #[error("lease {lease} still held by another writer after waiting {waited:?}")]
    LockBusy { lease: String, waited: Duration },
    #[error("lease {lease} would expire before the create could finish")]
    LeaseExpiring { lease: String },
    #[error("{0}")]
    Contention(String),
    #[error("processing the signals of {fingerprint} took longer than {after:?}")]
    Timeout {
        fingerprint: Fingerprint,
        after: Duration,
    },
    #[error("the request was cancelled")]
    Cancelled,
    #[error(transparent)]
    Kube(#[from] KubeError),
}

impl Error {
    /// metric_label is a short constant naming the error class.
    #[must_use]
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Overloaded { .. } => "overloaded",
            Error::LockBusy { .. } => "lock_busy",
            Error::LeaseExpiring { .. } => "lease_expiring",
            Error::Contention(_) => "contention",
            Error::Timeout { .. } => "timeout",
            Error::Cancelled => "cancelled",
            Error::Kube(e) => e.metric_label(),
        }
    }
}

/// Settings are the pipeline's knobs, taken from `Config`.
#[derive(Clone, Debug)]
pub struct Settings {
    pub api_timeout: Duration,
    /// batch_timeout bounds the whole processing of one batch.
    pub batch_timeout: Duration,
    pub max_in_flight: usize,
}

type Answer = Result<Outcome, Error>;

/// Traced is a signal with its span, under which its batch's work is traced.
struct Traced {
    signal: Signal,
    span: tracing::Span,
}

/// Pipeline is shared by all requests of one process.
pub struct Pipeline {
    coalescer: Arc<Coalescer<Fingerprint, Traced, Answer>>,
}

impl Pipeline {
    /// new builds the pipeline around a writer.
    #[must_use]
    pub(crate) fn new(writer: Writer, settings: Settings) -> Pipeline {
        let writer = Arc::new(writer);
        let limit = settings.max_in_flight;
        let run = move |fp: Fingerprint, batch: Batch<Traced, Answer>| {
            let writer = Arc::clone(&writer);
            let settings = settings.clone();
            async move { run_batch(&writer, &settings, fp, batch).await }
        };
        Pipeline {
            coalescer: Coalescer::new(limit, run),
        }
    }

    /// submit processes one signal and returns once its effect is durable; its span
    /// (`signal`) is a child of the caller's current span.
    pub async fn submit(&self, signal: Signal) -> Answer {
        let span = tracing::info_span!(
            "signal",
            fingerprint = %signal.fingerprint,
            signal.name = %signal.name,
        );
        let traced = Traced {
            span: span.clone(),
            signal,
        };
        match self
            .coalescer
            .submit(traced.signal.fingerprint.clone(), traced)
            .instrument(span)
            .await
        {
            Ok(answer) => answer,
            Err(Refused::Overloaded { limit }) => Err(Error::Overloaded { limit }),
            Err(Refused::Dropped) => Err(Error::Cancelled),
        }
    }
}

/// run_batch writes one batch and answers its callers. Its span (`batch`) is a child of the first
/// signal's span and follows from the others'.
async fn run_batch(
    writer: &Writer,
    settings: &Settings,
    fp: Fingerprint,
    batch: Batch<Traced, Answer>,
) {
    let calls = ApiCalls::new(settings.api_timeout);
    let signals = batch.len();
    let span = match batch.items().next() {
        Some(first) => {
            tracing::info_span!(parent: &first.span, "batch", fingerprint = %fp, signals)
        }
        None => tracing::info_span!("batch", fingerprint = %fp, signals),
    };
    for other in batch.items().skip(1) {
        span.follows_from(&other.span);
    }
    let trace_id = telemetry::trace_id(&span);
    let written = match batch.items().next() {
        Some(first) if !batch.cancelled() => {
            let cancelled = || batch.cancelled();
            let work = writer.write(&first.signal, signals as i64, &calls, &cancelled);
            tokio::time::timeout(settings.batch_timeout, work)
                .instrument(span.clone())
                .await
                .unwrap_or_else(|_| {
                    Err(Error::Timeout {
                        fingerprint: fp.clone(),
                        after: settings.batch_timeout,
                    })
                })
        }
        _ => Err(Error::Cancelled),
    };
    let namespace = writer.rrs.namespace();
    let answer = written.map(|w| {
        (
            w.created,
            format!("{namespace}/{}", w.rr),
            w.occurrence_count,
        )
    });
    batch.reply(|i, _| {
        answer
            .clone()
            .map(|(created, remediation_request, occurrence_count)| Outcome {
                disposition: if created && i == 0 {
                    Disposition::Created
                } else {
                    Disposition::Duplicate
                },
                remediation_request,
                occurrence_count,
            })
    });
    let trace_id = trace_id.as_deref();
    match &answer {
        Ok((created, rr, count)) => tracing::info!(
            fingerprint = %fp, rr = %rr, created, signals,
            occurrence_count = count, api_calls = calls.count(), trace_id, "batch processed"
        ),
        Err(e) => tracing::warn!(
            fingerprint = %fp, signals, api_calls = calls.count(), error = %e,
            kind = e.metric_label(), trace_id, "batch failed"
        ),
    }
}
