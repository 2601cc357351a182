//! Pipeline takes signals from the web layer to Kubernetes: `resolve` finds the workload a
//! signal is about (and whether kubernaut manages it), the `coalescer` batches signals per
//! fingerprint, the `writer` counts each batch on the RR that holds the problem or creates
//! the next one under the fingerprint's fence record; `model` (tests only) checks the
//! protocol the writer follows. The protocol: docs/protocol.md.
//!
//! Kubernetes API requests per batch (when the process has seen the fingerprint and the
//! target's owners before; the first time adds one read of the record, and one metadata
//! read per owner on the target's chain):
//!
//! | path | requests |
//! |---|---|
//! | duplicate | get RR, status patch |
//! | new RR (locking on or off) | get RR (or record), claim record, create RR, status patch |
//!
//! The lock adds no request: a claim whose RR exists needs no release.

mod coalescer;
#[cfg(test)]
mod model;
mod resolve;
mod writer;

use std::{sync::Arc, time::Duration};

use tracing::Instrument as _;

use crate::{
    audit::{self, Caller},
    k8s::{ApiCalls, KubeError, Tally},
    signal::{Fingerprint, Signal},
    telemetry,
};
use coalescer::{Batch, Coalescer, Refused};
pub use resolve::Refusal;
pub(crate) use resolve::Resolver;
pub(crate) use writer::Writer;
pub use writer::rr_name;

/// Disposition says what became of one accepted signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disposition {
    Created,
    Duplicate,
}

/// Counted is the durable result of one signal counted on an RR.
#[derive(Clone, Debug)]
pub struct Counted {
    pub disposition: Disposition,
    /// `<namespace>/<name>` of the RR that counts this signal.
    pub remediation_request: String,
    /// tally is the RR's deduplication status after the count.
    pub tally: Tally,
}

/// Outcome is what became of one signal; its fingerprint is its workload's.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub fingerprint: Fingerprint,
    /// counted is Ok when an RR counts the signal, Err when it gets none (nothing written).
    pub counted: Result<Counted, Refusal>,
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

type Answer = Result<Counted, Error>;

/// Traced is a signal with its caller and its span, under which its batch's work is traced.
struct Traced {
    signal: Signal,
    caller: Caller,
    span: tracing::Span,
}

/// Pipeline is shared by all requests of one process.
pub struct Pipeline {
    resolver: Resolver,
    api_timeout: Duration,
    coalescer: Arc<Coalescer<Fingerprint, Traced, Answer>>,
}

impl Pipeline {
    /// new builds the pipeline around a writer.
    #[must_use]
    pub(crate) fn new(resolver: Resolver, writer: Writer, settings: Settings) -> Pipeline {
        let writer = Arc::new(writer);
        let limit = settings.max_in_flight;
        let api_timeout = settings.api_timeout;
        let run = move |fp: Fingerprint, batch: Batch<Traced, Answer>| {
            let writer = Arc::clone(&writer);
            let settings = settings.clone();
            async move { run_batch(&writer, &settings, fp, batch).await }
        };
        Pipeline {
            resolver,
            api_timeout,
            coalescer: Coalescer::new(limit, run),
        }
    }

    /// submit resolves one signal from `caller` to its workload and counts it, returning
    /// once its effect is durable; its span (`signal`) is a child of the caller's current
    /// span. Its batch emits the audit events of what became of it.
    pub async fn submit(&self, mut signal: Signal, caller: Caller) -> Result<Outcome, Error> {
        let calls = ApiCalls::new(self.api_timeout);
        let refused = self
            .resolver
            .resolve(&mut signal, &calls)
            .instrument(tracing::info_span!("resolve"))
            .await?;
        let fingerprint = signal.fingerprint.clone();
        if let Some(refusal) = refused {
            return Ok(Outcome {
                fingerprint,
                counted: Err(refusal),
            });
        }
        let counted = self.count(signal, caller).await?;
        Ok(Outcome {
            fingerprint,
            counted: Ok(counted),
        })
    }

    async fn count(&self, signal: Signal, caller: Caller) -> Answer {
        let span = tracing::info_span!(
            "signal",
            fingerprint = %signal.fingerprint,
            signal.name = %signal.name,
        );
        let traced = Traced {
            span: span.clone(),
            signal,
            caller,
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

/// Answered is a batch's result as its callers get it: created, `<namespace>/<name>`, tally.
type Answered = Result<(bool, String, Tally), Error>;

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
    let answer = written.map(|w| (w.created, format!("{namespace}/{}", w.rr), w.tally));
    let events = reply(batch, &answer);
    // After the answers: the audit path never delays a signal.
    for event in &events {
        audit::emit(&span, event);
    }
    let trace_id = trace_id.as_deref();
    match &answer {
        Ok((created, rr, tally)) => tracing::info!(
            fingerprint = %fp, rr = %rr, created, signals,
            occurrence_count = tally.occurrence_count, api_calls = calls.count(), trace_id, "batch processed"
        ),
        Err(e) => tracing::warn!(
            fingerprint = %fp, signals, api_calls = calls.count(), error = %e,
            kind = e.metric_label(), trace_id, "batch failed"
        ),
    }
}

/// reply answers every signal of the batch and returns the audit events of what became of
/// them, in order.
fn reply(batch: Batch<Traced, Answer>, answer: &Answered) -> Vec<audit::Event> {
    let signals = batch.len();
    // The create was made for the first signal, on behalf of the batch: one event.
    let mut events: Vec<audit::Event> = match (answer, batch.items().next()) {
        (Err(e), Some(first)) if audit::is_create_failure(e) => {
            vec![audit::crd_failed(&first.signal, e)]
        }
        _ => Vec::new(),
    };
    batch.reply(|i, item| {
        let counted = answer
            .clone()
            .map(|(created, remediation_request, tally)| Counted {
                disposition: if created && i == 0 {
                    Disposition::Created
                } else {
                    Disposition::Duplicate
                },
                remediation_request,
                tally,
            });
        if let Ok(c) = &counted {
            let (signal, caller, rr) = (&item.signal, &item.caller, &c.remediation_request);
            match c.disposition {
                Disposition::Created => {
                    events.push(audit::received(signal, caller, rr));
                    events.push(audit::crd_created(signal, rr));
                }
                Disposition::Duplicate => {
                    // The batch was counted in arrival order: this signal's own count.
                    let later = (signals - 1 - i) as i64;
                    let count = (c.tally.occurrence_count - later).max(1);
                    events.push(audit::deduplicated(signal, caller, rr, count));
                }
            }
        }
        counted
    });
    events
}
