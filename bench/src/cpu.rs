//! Cpu accounts the machine's CPU time to the processes of a phase: the gateways, the API
//! server, etcd, the collector, the bench itself (its load generator, or the raw client) and
//! perf, read from `/proc/<pid>/stat` (user + system time) before and after the phase. The
//! bench owns the machine while it runs, so a process is known by its command name.

use std::collections::BTreeMap;

/// The names the report gives the accounted processes.
pub const GATEWAY: &str = "gateway";
pub const APISERVER: &str = "kube-apiserver";
pub const ETCD: &str = "etcd";
pub const BENCH: &str = "bench (load generator or raw client)";
pub const COLLECTOR: &str = "OpenTelemetry Collector";

/// PROCESSES are the command names accounted, each with the name the report gives it. A
/// command name is at most 15 bytes (`/proc/<pid>/comm`).
pub const PROCESSES: [(&str, &str); 6] = [
    ("signal-gateway", GATEWAY),
    ("kube-apiserver", APISERVER),
    ("etcd", ETCD),
    ("bench", BENCH),
    ("otelcol", COLLECTOR),
    ("perf", "perf (the profile)"),
];

/// Snapshot is the CPU time used so far by each accounted process, by the report's name.
#[derive(Clone, Debug, Default)]
pub struct Snapshot(BTreeMap<&'static str, u64>);

/// Cpu is the CPU seconds each accounted process used over a span of time.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Cpu(pub BTreeMap<&'static str, f64>);

/// sample reads every process' CPU time now.
#[must_use]
pub fn sample() -> Snapshot {
    let mut ticks = BTreeMap::new();
    let entries = std::fs::read_dir("/proc").into_iter().flatten().flatten();
    for entry in entries {
        if let Ok(stat) = std::fs::read_to_string(entry.path().join("stat"))
            && let Some((comm, t)) = parse_stat(&stat)
            && let Some((_, name)) = PROCESSES.iter().find(|(c, _)| comm.starts_with(c))
        {
            *ticks.entry(*name).or_insert(0) += t;
        }
    }
    Snapshot(ticks)
}

/// parse_stat reads the command name and user + system clock ticks of a `/proc/<pid>/stat`
/// line (`pid (comm) state ...`, utime and stime the 14th and 15th fields).
fn parse_stat(stat: &str) -> Option<(&str, u64)> {
    let (open, close) = (stat.find('(')?, stat.rfind(')')?);
    let comm = stat.get(open + 1..close)?;
    let mut rest = stat.get(close + 2..)?.split(' ').skip(11);
    let utime: u64 = rest.next()?.parse().ok()?;
    let stime: u64 = rest.next()?.parse().ok()?;
    Some((comm, utime + stime))
}

impl Snapshot {
    /// since is the CPU used from `before` to this snapshot. A process that ended in between
    /// takes its time with it, and one that started counts from zero.
    #[must_use]
    pub fn since(&self, before: &Snapshot) -> Cpu {
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        Cpu(self
            .0
            .iter()
            .map(|(name, t)| {
                let was = before.0.get(name).copied().unwrap_or(0);
                (*name, t.saturating_sub(was) as f64 / hz)
            })
            .collect())
    }
}

impl Cpu {
    /// add sums `other` into this one.
    pub fn add(&mut self, other: &Cpu) {
        for (name, s) in &other.0 {
            *self.0.entry(name).or_insert(0.0) += s;
        }
    }

    /// seconds is the CPU of the process the report calls `name`.
    #[must_use]
    pub fn seconds(&self, name: &str) -> f64 {
        self.0.get(name).copied().unwrap_or(0.0)
    }

    /// total is the CPU of every accounted process.
    #[must_use]
    pub fn total(&self) -> f64 {
        self.0.values().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_gives_its_command_and_cpu() {
        let line = "4242 (kube-apiserver) S 1 4242 4242 0 -1 4194560 9 0 0 0 \
                    170 30 0 0 20 0 12 0 100 0 0";
        assert_eq!(parse_stat(line), Some(("kube-apiserver", 200)));
        // A command name may hold spaces and parentheses.
        let odd = "7 (a (b) c) R 1 7 7 0 -1 0 0 0 0 0 5 6 0 0";
        assert_eq!(parse_stat(odd), Some(("a (b) c", 11)));
        assert_eq!(parse_stat("7 (x) R 1"), None);
    }

    #[test]
    fn this_process_is_seen_using_cpu() {
        let before = sample();
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_millis(300) {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        let used = sample().since(&before);
        // The test binary is named bench-<hash>: it counts as the bench.
        assert!(
            used.seconds("bench (load generator or raw client)") > 0.1,
            "{used:?}"
        );
    }
}
