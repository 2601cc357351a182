//! Report renders the results of one bench run as Markdown.

use std::fmt::Write as _;
use std::time::Duration;

use crate::IDLE_WINDOW;
use crate::apiserver::Delta;
use crate::load::{ColdStart, Phase};
use crate::stats::{ms, stats};

/// LOCK_BUDGET_MS is the latency the original plan allowed the lock.
const LOCK_BUDGET_MS: f64 = 20.0;

/// Single is one gateway process measured alone: new RRs, then duplicates,
/// and its memory after both.
pub struct Single {
    pub locking: bool,
    pub new: Phase,
    pub dup: Phase,
    pub memory: (u64, u64),
}

/// Results is everything one run measured.
pub struct Results {
    pub facts: Vec<(&'static str, String)>,
    pub n: usize,
    pub scrape_cost: f64,
    pub idle: Delta,
    pub single: Vec<Single>,
    pub storm: Phase,
    pub throughput: Phase,
    pub replica_memory: Vec<(u64, u64)>,
    pub cold: Vec<ColdStart>,
}

/// latency_row writes one row of the latency table.
fn latency_row(out: &mut String, label: &str, p: &Phase) {
    let s = stats(&p.latencies());
    let _ = writeln!(
        out,
        "| {label} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2} | {:.2} | {} |",
        s.n,
        s.p50,
        s.p90,
        s.p99,
        s.min,
        s.max,
        s.mean,
        p.log_per_signal(),
        p.server_per_signal(),
        p.unexpected()
    );
}

/// api_row writes one row of the API request table.
fn api_row(out: &mut String, p: &Phase) {
    let agree = format!("{:+.0}", p.server.total - p.log_calls as f64);
    let _ = writeln!(
        out,
        "| {} | {} | {} | {} | {:.0} | {agree} | {} |",
        p.name,
        p.signals,
        p.log_signals,
        p.log_calls,
        p.server.total,
        p.server.breakdown_text()
    );
}

/// render writes the report.
pub fn render(r: &Results) -> String {
    let Results {
        facts,
        n,
        scrape_cost,
        idle,
        single,
        storm,
        throughput,
        replica_memory,
        cold,
    } = r;
    let mut out = String::new();
    let _ = writeln!(out, "# signal-gateway benchmark\n");
    let _ = writeln!(
        out,
        "Written by `hack/bench.sh` (`target/release/bench`). All numbers are from one run on a \
         shared machine: compare numbers within this report, not across reports. Latencies are \
         client-side wall clock per request (HTTP/1 keep-alive over loopback), in ms; quantiles \
         are linearly interpolated.\n"
    );
    let _ = writeln!(out, "| | |\n|---|---|");
    for (k, v) in facts {
        let _ = writeln!(out, "| {k} | {v} |");
    }

    let _ = writeln!(
        out,
        "\n## 1. One gateway process, sequential requests\n\n\
         Per mode one gateway process in a namespace of its own; one warm-up signal (not \
         counted), then {n} signals for {n} distinct pods (new RR each), then the same {n} \
         pods again (duplicates).\n",
        n = n
    );
    let _ = writeln!(
        out,
        "| phase | samples | p50 | p90 | p99 | min | max | mean | API req/signal (logs) | API req/signal (server) | unexpected answers |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|");
    for Single { new, dup, .. } in single {
        latency_row(&mut out, &new.name, new);
        latency_row(&mut out, &dup.name, dup);
    }
    let find = |locking: bool| single.iter().find(|s| s.locking == locking);
    if let (Some(on), Some(off)) = (find(true), find(false)) {
        let (son, soff) = (stats(&on.new.latencies()), stats(&off.new.latencies()));
        let (don, doff) = (stats(&on.dup.latencies()), stats(&off.dup.latencies()));
        let cost = son.p50 - soff.p50;
        let verdict = if cost <= LOCK_BUDGET_MS {
            "within"
        } else {
            "over"
        };
        let _ = writeln!(
            out,
            "\n**Latency cost of the lock** (new RR): median(locking on) − median(locking off) = \
             {:.1} − {:.1} = **{cost:.1} ms**, {verdict} the original plan's {LOCK_BUDGET_MS:.0} ms \
             budget ({:.0} % of it). Ratio of medians on/off: {:.2}; p90 on − off: {:.1} ms.\n\n\
             Noise check: duplicates take no Lease in either mode, so their median difference \
             (on − off = {:.1} ms) is what this machine's drift alone produces between the two runs.",
            son.p50,
            soff.p50,
            cost / LOCK_BUDGET_MS * 100.0,
            son.p50 / soff.p50,
            son.p90 - soff.p90,
            don.p50 - doff.p50,
        );
    }
    let _ = writeln!(
        out,
        "\nServer-side time per Kubernetes request in these phases (mean of \
         `apiserver_request_duration_seconds`, i.e. inside kube-apiserver):\n"
    );
    for Single { new, dup, .. } in single {
        for p in [new, dup] {
            let _ = writeln!(out, "- {}: {}", p.name, p.server.server_ms_text());
        }
    }

    let _ = writeln!(
        out,
        "\n## API requests, counted two ways\n\n\
         (a) the sum of `api_calls` over the gateways' `batch processed`/`batch failed` log \
         lines; (b) the API server's own `apiserver_request_total`, summed over all samples, \
         scraped before and after each phase, minus what one scrape adds to it (measured: \
         {scrape_cost:.0}). (b) also counts the API server's own background traffic: in an idle \
         window of {:.0} s before the load it counted {:.0} requests ({}).\n",
        IDLE_WINDOW.as_secs_f64(),
        idle.total,
        if idle.breakdown.is_empty() {
            "none".to_owned()
        } else {
            idle.breakdown_text()
        }
    );
    let _ = writeln!(
        out,
        "| phase | signals sent | signals in logs | (a) logs | (b) server | (b) − (a) | (b) by verb and resource |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|");
    for Single { new, dup, .. } in single {
        api_row(&mut out, new);
        api_row(&mut out, dup);
    }
    api_row(&mut out, storm);
    api_row(&mut out, throughput);

    let s = stats(&storm.latencies());
    let _ = writeln!(
        out,
        "\n## 2. Storm: 3 processes (locking on), {} concurrent identical signals\n\n\
         - wall time: **{:.1} ms** (first request sent to last answer)\n\
         - API requests per signal: **{:.2}** (logs: {} for {} signals), **{:.2}** (server: {:.0})\n\
         - answers: {} x 201, {} x 202, unexpected: {}\n\
         - latency: p50 {:.1} ms, p90 {:.1} ms, max {:.1} ms",
        storm.signals,
        ms(storm.wall),
        storm.log_per_signal(),
        storm.log_calls,
        storm.log_signals,
        storm.server_per_signal(),
        storm.server.total,
        storm.count(201),
        storm.count(202),
        storm.unexpected(),
        s.p50,
        s.p90,
        s.max
    );

    let s = stats(&throughput.latencies());
    let _ = writeln!(
        out,
        "\n## 3. Throughput: 3 processes (locking on), 50 fingerprints x 20 signals, 64 in flight\n\n\
         - **{:.0} signals/s** ({} signals in {:.2} s)\n\
         - API requests per signal: {:.2} (logs), {:.2} (server)\n\
         - answers: {} x 201, {} x 202, unexpected: {}\n\
         - latency under load: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        throughput.signals as f64 / throughput.wall.as_secs_f64(),
        throughput.signals,
        throughput.wall.as_secs_f64(),
        throughput.log_per_signal(),
        throughput.server_per_signal(),
        throughput.count(201),
        throughput.count(202),
        throughput.unexpected(),
        s.p50,
        s.p90,
        s.p99,
        s.max
    );

    let _ = writeln!(
        out,
        "\n## 4. Memory (`/proc/<pid>/status`), after the load\n\n| process | load it served | VmRSS | VmHWM (peak) |\n|---|---|---|---|"
    );
    for Single {
        locking,
        new,
        memory: (rss, hwm),
        ..
    } in single
    {
        let _ = writeln!(
            out,
            "| single, locking {} | {} sequential signals | {:.1} MiB | {:.1} MiB |",
            if *locking { "on" } else { "off" },
            2 * new.signals + 1,
            *rss as f64 / 1024.0,
            *hwm as f64 / 1024.0
        );
    }
    for (i, (rss, hwm)) in replica_memory.iter().enumerate() {
        let _ = writeln!(
            out,
            "| replica {i} of 3 | storm + throughput, about a third each | {:.1} MiB | {:.1} MiB |",
            *rss as f64 / 1024.0,
            *hwm as f64 / 1024.0
        );
    }

    let listening: Vec<Duration> = cold.iter().map(|c| c.listening).collect();
    let ready: Vec<Duration> = cold.iter().map(|c| c.ready).collect();
    let (l, r) = (stats(&listening), stats(&ready));
    let _ = writeln!(
        out,
        "\n## 5. Cold start ({} starts, locking on)\n\n\
         The gateway connects to the API server before it opens its port, so `listening` \
         already includes that set-up; `/readyz` is polled every 2 ms from then on.\n\n\
         | | median | min | max | each |\n|---|---|---|---|---|\n\
         | spawn → `listening` log line | {:.1} ms | {:.1} ms | {:.1} ms | {} |\n\
         | spawn → first `GET /readyz` 200 | {:.1} ms | {:.1} ms | {:.1} ms | {} |",
        cold.len(),
        l.p50,
        l.min,
        l.max,
        listening
            .iter()
            .map(|d| format!("{:.1}", ms(*d)))
            .collect::<Vec<_>>()
            .join(", "),
        r.p50,
        r.min,
        r.max,
        ready
            .iter()
            .map(|d| format!("{:.1}", ms(*d)))
            .collect::<Vec<_>>()
            .join(", "),
    );
    out
}

// ---------------------------------------------------------------------------
