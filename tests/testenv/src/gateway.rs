//! Gateway runs one signal-gateway process against a control plane, for the
//! end-to-end tests and the bench, and reads what it logs.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, mpsc};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::watch;

use crate::{ControlPlane, Error, Identity, Result, spawn_tied};

/// START_TIMEOUT bounds the wait from spawn to the `listening` log line.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// LOG_TIMEOUT bounds every wait for a log line or a process state.
const LOG_TIMEOUT: Duration = Duration::from_secs(30);
/// PROCESS_TIMINGS are the lock and API budgets the tests give a gateway process: a lease
/// short enough to expire within a test that kills its holder, waits and calls generous for
/// a loaded machine.
pub const PROCESS_TIMINGS: [(&str, &str); 3] = [
    ("GATEWAY_LOCK_DURATION_SECONDS", "10"),
    ("GATEWAY_LOCK_WAIT_MS", "20000"),
    ("GATEWAY_API_TIMEOUT_MS", "5000"),
];
/// IN_PROCESS_TIMINGS are those of a gateway the tests assemble in their own process, whose
/// lease outlasts a claim the test pauses.
pub const IN_PROCESS_TIMINGS: [(&str, &str); 3] = [
    ("GATEWAY_LOCK_DURATION_SECONDS", "30"),
    ("GATEWAY_LOCK_WAIT_MS", "20000"),
    ("GATEWAY_API_TIMEOUT_MS", "5000"),
];
/// PAUSE_VAR selects the chaos pause point; with it, a resume file is set up.
const PAUSE_VAR: &str = "GATEWAY_TEST_PAUSE_AT";

/// Gateway is one signal-gateway process; it is killed when dropped, and by
/// the kernel when this process dies.
#[derive(Debug)]
pub struct Gateway {
    child: Child,
    name: String,
    addr: SocketAddr,
    spawned: Instant,
    listening: Instant,
    logs: Arc<Mutex<Vec<String>>>,
    /// lines changes whenever a log line arrives.
    lines: watch::Receiver<usize>,
    /// resume holds the resume file of the chaos pause point, when one is set.
    resume: Option<tempfile::TempDir>,
}

/// Batches sums the `batch processed` and `batch failed` log lines.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Batches {
    /// api_calls is the number of Kubernetes API requests the batches made.
    pub api_calls: u64,
    /// signals is the number of signals in the batches.
    pub signals: u64,
    /// failed_signals is the part of `signals` in failed batches.
    pub failed_signals: u64,
}

impl Gateway {
    /// spawn starts `bin` as gateway `name` with the gateway identity's
    /// kubeconfig, namespace `ns`, JSON logs, no auth and a free loopback port,
    /// then `env` on top; it returns once the process logs `listening`.
    ///
    /// When `env` sets `GATEWAY_TEST_PAUSE_AT` (a binary built with the `chaos`
    /// feature), the resume file lives in a temporary directory that
    /// [`Gateway::thaw`] fills.
    pub fn spawn(
        bin: &Path,
        cp: &ControlPlane,
        ns: &str,
        name: &str,
        env: &[(&str, &str)],
    ) -> Result<Gateway> {
        let mut cmd = Command::new(bin);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("KUBECONFIG", cp.kubeconfig_path(Identity::Gateway))
            .env("GATEWAY_NAMESPACE", ns)
            .env("GATEWAY_LISTEN_ADDR", "127.0.0.1:0")
            .env("GATEWAY_AUTH", "none")
            .env("GATEWAY_LOG_FORMAT", "json")
            // Most tests alert about Pods that do not exist; the owner tests turn it on.
            .env("GATEWAY_OWNER_RESOLUTION", "false")
            .env("POD_NAME", name)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut resume = None;
        if env.iter().any(|(k, _)| *k == PAUSE_VAR) {
            let dir = tempfile::tempdir().map_err(|source| Error::Io {
                context: "creating the resume file's directory".into(),
                source,
            })?;
            cmd.env("GATEWAY_TEST_RESUME_FILE", dir.path().join("resume"));
            resume = Some(dir);
        }
        cmd.envs(env.iter().copied());

        let spawned = Instant::now();
        let mut child = spawn_tied(cmd).map_err(|source| Error::Io {
            context: format!("starting {}", bin.display()),
            source,
        })?;
        let Some(stderr) = child.stderr.take() else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::Other(format!("{name}: no stderr pipe")));
        };
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (lines_tx, lines) = watch::channel(0);
        let (listening_tx, listening_rx) = mpsc::channel();
        let sink = Arc::clone(&logs);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr)
                .lines()
                .map_while(std::result::Result::ok)
            {
                // Only the start-up line is decoded here: the bench reads every line of a
                // saturated gateway on the cores it measures.
                if line.contains("\"listening\"")
                    && let Ok(v) = serde_json::from_str::<Value>(&line)
                    && v["message"] == "listening"
                {
                    let addr = v["addr"].as_str().unwrap_or_default().to_owned();
                    let _ = listening_tx.send((Instant::now(), addr));
                }
                lock(&sink).push(line);
                lines_tx.send_modify(|n| *n += 1);
            }
        });
        // From here on the child belongs to a Gateway, so that an error kills it.
        let mut gw = Gateway {
            child,
            name: name.to_owned(),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            spawned,
            listening: spawned,
            logs,
            lines,
            resume,
        };
        let (at, addr) = listening_rx.recv_timeout(START_TIMEOUT).map_err(|_| {
            Error::Other(format!(
                "{name} did not log `listening` within {START_TIMEOUT:?} (exit: {:?}); its log:\n{}",
                gw.child.try_wait().ok().flatten(),
                gw.logs().join("\n")
            ))
        })?;
        gw.addr = addr
            .parse()
            .map_err(|e| Error::Other(format!("{name}: listening on {addr:?}: {e}")))?;
        gw.listening = at;
        Ok(gw)
    }

    /// addr is where the gateway listens.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// name is the gateway's `POD_NAME`.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// started_in is the time from spawn to the `listening` log line.
    #[must_use]
    pub fn started_in(&self) -> Duration {
        self.listening - self.spawned
    }

    /// spawned is when the process was started.
    #[must_use]
    pub fn spawned(&self) -> Instant {
        self.spawned
    }

    /// pid is the process id.
    #[must_use]
    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).unwrap_or(i32::MAX)
    }

    /// signal sends `sig` to the process.
    ///
    /// # Panics
    ///
    /// When the signal cannot be sent.
    pub fn signal(&self, sig: i32) {
        // SAFETY: sending a signal to our own child.
        let sent = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(sent, 0, "sending signal {sig} to {}", self.name);
    }

    /// kill sends SIGKILL and reaps the process.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// wait blocks until the process exits and returns how it ended.
    pub fn wait(&mut self) -> std::io::Result<ExitStatus> {
        self.child.wait()
    }

    /// freeze waits until a request is parked at the pause point, then stops
    /// the whole process with SIGSTOP: every thread and timer is frozen.
    ///
    /// # Panics
    ///
    /// When no request pauses, or the process does not stop, in time.
    pub async fn freeze(&self) {
        self.wait_logged("test hook: paused").await;
        self.signal(libc::SIGSTOP);
        let deadline = Instant::now() + LOG_TIMEOUT;
        let stat = format!("/proc/{}/stat", self.pid());
        loop {
            let text = std::fs::read_to_string(&stat).unwrap_or_default();
            // The state follows the command name, which is in parentheses.
            let state = text
                .rsplit(')')
                .next()
                .and_then(|s| s.split_whitespace().next());
            if state == Some("T") {
                return;
            }
            assert!(Instant::now() < deadline, "{} did not stop", self.name);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// thaw lets the frozen request go on: it creates the resume file and
    /// sends SIGCONT.
    ///
    /// # Panics
    ///
    /// When the gateway was spawned without a pause point.
    pub fn thaw(&self) {
        let dir = self
            .resume
            .as_ref()
            .expect("thaw needs a gateway spawned with GATEWAY_TEST_PAUSE_AT");
        std::fs::write(dir.path().join("resume"), b"").expect("writing the resume file");
        self.signal(libc::SIGCONT);
    }

    /// wait_logged returns once a log line contains `needle`.
    ///
    /// # Panics
    ///
    /// When no such line arrives within 30 s.
    pub async fn wait_logged(&self, needle: &str) {
        let mut lines = self.lines.clone();
        let deadline = tokio::time::Instant::now() + LOG_TIMEOUT;
        while !self.logged(needle) {
            let changed = tokio::time::timeout_at(deadline, lines.changed()).await;
            assert!(
                matches!(changed, Ok(Ok(()))),
                "{} never logged {needle:?}; its log:\n{}",
                self.name,
                self.logs().join("\n")
            );
        }
    }

    /// wait_logged_times returns once `n` log lines contain `needle`.
    ///
    /// # Panics
    ///
    /// When they do not arrive within 30 s.
    pub async fn wait_logged_times(&self, needle: &str, n: usize) {
        let mut lines = self.lines.clone();
        let deadline = tokio::time::Instant::now() + LOG_TIMEOUT;
        while lock(&self.logs)
            .iter()
            .filter(|l| l.contains(needle))
            .count()
            < n
        {
            let changed = tokio::time::timeout_at(deadline, lines.changed()).await;
            assert!(
                matches!(changed, Ok(Ok(()))),
                "{} never logged {needle:?} {n} times; its log:\n{}",
                self.name,
                self.logs().join("\n")
            );
        }
    }

    /// logged reports whether a log line so far contains `needle`.
    #[must_use]
    pub fn logged(&self, needle: &str) -> bool {
        lock(&self.logs).iter().any(|l| l.contains(needle))
    }

    /// logs is every line logged so far.
    #[must_use]
    pub fn logs(&self) -> Vec<String> {
        lock(&self.logs).clone()
    }

    /// log_len is the number of lines logged so far, a mark for [`Gateway::batches`].
    #[must_use]
    pub fn log_len(&self) -> usize {
        lock(&self.logs).len()
    }

    /// batches sums the batch lines logged from line `from` on.
    #[must_use]
    pub fn batches(&self, from: usize) -> Batches {
        let logs = lock(&self.logs);
        let mut sum = Batches::default();
        for v in logs
            .iter()
            .skip(from)
            // Decoding only the batch lines: the bench sums them on the cores it measures.
            .filter(|l| l.contains("\"batch "))
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        {
            let failed = v["message"] == "batch failed";
            if v["message"] != "batch processed" && !failed {
                continue;
            }
            let signals = v["signals"].as_u64().unwrap_or(0);
            sum.api_calls += v["api_calls"].as_u64().unwrap_or(0);
            sum.signals += signals;
            if failed {
                sum.failed_signals += signals;
            }
        }
        sum
    }

    /// wait_batches returns once the batch lines logged from line `from` on
    /// count at least `signals` signals, or after `timeout` with what they count.
    pub async fn wait_batches(&self, from: usize, signals: u64, timeout: Duration) -> Batches {
        let mut lines = self.lines.clone();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let sum = self.batches(from);
            if sum.signals >= signals {
                return sum;
            }
            let changed = tokio::time::timeout_at(deadline, lines.changed()).await;
            if !matches!(changed, Ok(Ok(()))) {
                return self.batches(from);
            }
        }
    }

    /// memory reads VmRSS and VmHWM (peak) of the process, in KiB.
    #[must_use]
    pub fn memory(&self) -> (u64, u64) {
        crate::process::memory(self.pid()).unwrap_or((0, 0))
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
