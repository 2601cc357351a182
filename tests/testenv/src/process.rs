//! Child processes that die with the test process.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::thread;

type SpawnRequest = (Command, mpsc::SyncSender<io::Result<Child>>);

/// SPAWNER is the channel to the thread that forks every child.
///
/// `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, not
/// the process, and each `#[tokio::test]` runs on a thread of its own that ends
/// with the test. Forking from one thread that lives as long as the process
/// ties the children to the process instead.
static SPAWNER: OnceLock<mpsc::Sender<SpawnRequest>> = OnceLock::new();

fn spawner() -> &'static mpsc::Sender<SpawnRequest> {
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        thread::Builder::new()
            .name("testenv-spawner".into())
            .spawn(move || {
                // The sender lives in a static, so this loop never ends.
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("starting the testenv spawner thread");
        tx
    })
}

/// spawn_tied starts `cmd` as a child that the kernel kills (SIGKILL) when this
/// process dies, however it dies.
pub fn spawn_tied(mut cmd: Command) -> io::Result<Child> {
    // SAFETY: getpid is always safe to call.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the closure only calls async-signal-safe functions.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    let (tx, rx) = mpsc::sync_channel(1);
    spawner()
        .send((cmd, tx))
        .map_err(|_| io::Error::other("testenv spawner thread is gone"))?;
    rx.recv()
        .map_err(|_| io::Error::other("testenv spawner thread is gone"))?
}

/// Proc is a running child with its log file.
#[derive(Debug)]
pub(crate) struct Proc {
    child: Child,
    log: PathBuf,
    /// log_start is the log length when this child started, so that errors
    /// show this run's output and not an earlier one's.
    log_start: u64,
}

impl Proc {
    /// spawn starts `program` with `args`, stdout and stderr appended to `log`,
    /// killed by SIGKILL when the test process dies.
    pub(crate) fn spawn(program: &Path, args: &[String], log: &Path) -> io::Result<Proc> {
        let out = OpenOptions::new().create(true).append(true).open(log)?;
        let log_start = out.metadata()?.len();
        let err = out.try_clone()?;
        let mut cmd = Command::new(program);
        cmd.args(args).stdin(Stdio::null()).stdout(out).stderr(err);
        let child = spawn_tied(cmd)?;
        Ok(Proc {
            child,
            log: log.to_owned(),
            log_start,
        })
    }

    /// exited reports how the child ended, if it has.
    pub(crate) fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(e) => Some(format!("waiting for it failed: {e}")),
        }
    }

    /// kill sends SIGKILL and reaps the child.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// output is what this run of the child has logged so far.
    pub(crate) fn output(&self) -> String {
        read_from(&self.log, self.log_start)
    }

    pub(crate) fn log(&self) -> &Path {
        &self.log
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

fn read_from(path: &Path, offset: u64) -> String {
    let mut buf = Vec::new();
    if let Ok(mut f) = File::open(path)
        && f.seek(SeekFrom::Start(offset)).is_ok()
    {
        let _ = f.read_to_end(&mut buf);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// tail is the last `n` lines of `text`.
pub(crate) fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// memory reads VmRSS and VmHWM (peak) of process `pid`, in KiB.
pub(crate) fn memory(pid: impl std::fmt::Display) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}
