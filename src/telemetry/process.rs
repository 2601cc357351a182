//! Process registers the `process_*` metrics of Prometheus' client libraries as observable
//! instruments, read from `/proc` at each collection, so that they go out over OTLP as well
//! as on `GATEWAY_METRICS_ADDR`. Where a file cannot be read or parsed (not Linux), its
//! metric is absent.

use opentelemetry::metrics::Meter;

/// USER_HZ is the unit of the times in `/proc/<pid>/stat`: the kernel reports them in
/// 1/100 s to user space on every architecture (Prometheus' procfs assumes the same).
const USER_HZ: f64 = 100.0;

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// register creates the instruments; their callbacks run at each collection.
pub(super) fn register(meter: &Meter) {
    let _ = meter
        .f64_observable_counter("process.cpu")
        .with_unit("s")
        .with_description("Total user and system CPU time spent in seconds")
        .with_callback(|o| {
            if let Some(v) = read("/proc/self/stat").as_deref().and_then(cpu_seconds) {
                o.observe(v, &[]);
            }
        })
        .build();
    gauge(
        meter,
        "process.resident_memory",
        "By",
        "Resident memory size in bytes",
        || {
            read("/proc/self/status")
                .as_deref()
                .and_then(|s| status_bytes(s, "VmRSS"))
        },
    );
    gauge(
        meter,
        "process.virtual_memory",
        "By",
        "Virtual memory size in bytes",
        || {
            read("/proc/self/status")
                .as_deref()
                .and_then(|s| status_bytes(s, "VmSize"))
        },
    );
    gauge(
        meter,
        "process.open_fds",
        "",
        "Number of open file descriptors",
        open_fds,
    );
    gauge(
        meter,
        "process.max_fds",
        "",
        "Maximum number of open file descriptors",
        || read("/proc/self/limits").as_deref().and_then(max_fds),
    );
    let started = read("/proc/self/stat")
        .zip(read("/proc/stat"))
        .and_then(|(stat, boot)| start_time(&stat, &boot));
    if let Some(started) = started {
        let _ = meter
            .f64_observable_gauge("process.start_time")
            .with_unit("s")
            .with_description("Start time of the process since unix epoch in seconds")
            .with_callback(move |o| o.observe(started, &[]))
            .build();
    }
}

/// gauge registers an integer gauge (`unit` empty: none) that observes what `value` reads.
fn gauge(
    meter: &Meter,
    name: &'static str,
    unit: &'static str,
    description: &'static str,
    value: fn() -> Option<u64>,
) {
    let builder = meter
        .u64_observable_gauge(name)
        .with_description(description)
        .with_callback(move |o| {
            if let Some(v) = value() {
                o.observe(v, &[]);
            }
        });
    let builder = if unit.is_empty() {
        builder
    } else {
        builder.with_unit(unit)
    };
    let _ = builder.build();
}

/// stat_fields are the fields of `/proc/<pid>/stat` after the command name (field 3,
/// the state, first); the name is in parentheses and may hold spaces and parentheses.
fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().collect())
}

/// ticks is field `n` (numbered from 1, as in proc(5)) of `/proc/<pid>/stat`.
fn ticks(fields: &[&str], n: usize) -> Option<f64> {
    fields
        .get(n.checked_sub(3)?)?
        .parse::<u64>()
        .ok()
        .map(|t| t as f64)
}

/// cpu_seconds is utime + stime (fields 14 and 15).
fn cpu_seconds(stat: &str) -> Option<f64> {
    let fields = stat_fields(stat)?;
    Some((ticks(&fields, 14)? + ticks(&fields, 15)?) / USER_HZ)
}

/// start_time is the boot time (`btime` of `/proc/stat`) plus the process' start after
/// boot (field 22), in seconds since the epoch.
fn start_time(stat: &str, boot: &str) -> Option<f64> {
    let fields = stat_fields(stat)?;
    let btime = boot
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(btime as f64 + ticks(&fields, 22)? / USER_HZ)
}

/// status_bytes is the `key` line of `/proc/<pid>/status` (in kB) in bytes.
fn status_bytes(status: &str, key: &str) -> Option<u64> {
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))?;
    let mut parts = line.split_whitespace();
    let kb = parts.next()?.parse::<u64>().ok()?;
    match parts.next() {
        Some("kB") => kb.checked_mul(1024),
        _ => None,
    }
}

/// max_fds is the soft limit of "Max open files" in `/proc/<pid>/limits`.
fn max_fds(limits: &str) -> Option<u64> {
    limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// open_fds counts the entries of `/proc/self/fd` (the one reading it included, as
/// Prometheus' client libraries count).
fn open_fds() -> Option<u64> {
    let entries = std::fs::read_dir("/proc/self/fd").ok()?;
    Some(entries.filter(Result::is_ok).count() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_files_are_parsed_as_proc5_describes() {
        // A command name with spaces and a parenthesis; utime 250, stime 50, starttime 1234.
        let stat = "4242 (gate way) x) S 1 4242 4242 0 -1 4194560 1 0 0 0 250 50 0 0 20 0 9 0 1234 \
                    100000 2000 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 3 0 0 0 0 0";
        assert_eq!(cpu_seconds(stat), Some(3.0));
        assert_eq!(
            start_time(stat, "cpu  1 2 3\nbtime 1700000000\nprocesses 9\n"),
            Some(1_700_000_012.34)
        );
        assert_eq!(start_time(stat, "cpu 1\n"), None);
        assert_eq!(cpu_seconds("4242 (gw"), None);
        assert_eq!(cpu_seconds("4242 (gw) S 1"), None);
        let status = "Name:\tgw\nVmSize:\t  123456 kB\nVmRSS:\t    2048 kB\n";
        assert_eq!(status_bytes(status, "VmRSS"), Some(2048 * 1024));
        assert_eq!(status_bytes(status, "VmSize"), Some(123_456 * 1024));
        assert_eq!(status_bytes(status, "VmSwap"), None);
        assert_eq!(status_bytes("VmRSS: lots", "VmRSS"), None);
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max processes             63432                63432                processes\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(max_fds(limits), Some(1024));
        assert_eq!(
            max_fds("Max open files            unlimited            unlimited            files\n"),
            None
        );
    }
}
