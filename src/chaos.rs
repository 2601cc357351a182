//! Chaos lets the chaos tests freeze one request at a named point of the write path; it
//! does nothing unless the binary was built with the `chaos` feature.
//!
//! With `GATEWAY_TEST_PAUSE_AT` set, the first request to reach that point logs
//! `test hook: paused` and blocks until the file named by `GATEWAY_TEST_RESUME_FILE`
//! exists (at most two minutes). Tests freeze the whole process with SIGSTOP meanwhile,
//! act, then resume it.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::config::{Chaos, PausePoint};

/// Pauser holds the configured pause point; it fires once per process.
#[derive(Debug, Default)]
pub struct Pauser {
    chaos: Chaos,
    fired: AtomicBool,
}

impl Pauser {
    /// new builds the pauser from the validated chaos settings.
    #[must_use]
    pub fn new(chaos: &Chaos) -> Pauser {
        Pauser {
            chaos: chaos.clone(),
            fired: AtomicBool::new(false),
        }
    }

    /// pause blocks the calling request once if `point` is the configured pause point.
    pub async fn pause(&self, point: PausePoint) {
        if !cfg!(feature = "chaos") || self.chaos.pause_at != Some(point) {
            return;
        }
        let Some(resume) = &self.chaos.resume_file else {
            return;
        };
        if self.fired.swap(true, Ordering::SeqCst) {
            return;
        }
        tracing::warn!(?point, "test hook: paused");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while !resume.exists() && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        tracing::warn!(?point, "test hook: resumed");
    }

    /// fencing reports whether RR names are fenced (always, unless a chaos test turned it off).
    #[must_use]
    pub fn fencing(&self) -> bool {
        !(cfg!(feature = "chaos") && self.chaos.disable_fencing)
    }
}
