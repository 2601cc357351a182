#!/usr/bin/env bash
# Benchmarks signal-gateway (release build) against its own control plane, an
# OpenTelemetry Collector and gateway processes, with an open-loop load
# generator, and writes target/bench/report.json, report.md, latency_cdf.svg
# and performance.md (the report's Markdown is also printed). With --publish it
# also writes performance.md to docs/performance.md: the page is generated from
# the run's numbers by bench/src/report.rs, never edited by hand. Scenarios, each with the
# lock on and off: new, duplicate, crowded (10,000 other RRs), plan (the
# original plan's 1,000 signals at 50/s over 3 replicas), storm, scale (1-3
# replicas); with owner resolution on, lock on only: owners (200 Deployments
# of 2 Pods each: a new RR from a Pod never seen, a new Pod of a known
# ReplicaSet, a duplicate; compared with new and duplicate) and rollout-storm
# (50 Pods of one Deployment alerting at once over 3 replicas: one RR counts
# 50). storm-split (lock on only) is storm with the gateways' fence records in
# a lock namespace of their own (GATEWAY_LOCK_NAMESPACE); its p95 is compared
# with storm's (target <= 1.5: a waiter that sat out GATEWAY_LOCK_WAIT_MS made
# it seconds). The raw baseline: the gateway's exact requests for a new RR and a
# duplicate sent by the bench itself (bench/src/raw.rs), open and closed loop, for
# gateway / raw ratios. plan_10, storm_10, rollout_storm_10: ten replicas. The soak
# (last, it restarts the API server): a steady mix over 3 replicas under a fault
# schedule (SIGKILL, SIGSTOP past the lease, API server restart, retention, a lost
# fence record), 4 minutes by default; `--soak MINUTES` sets its length. The Lambda cold path: the release package (hack/lambda.sh) under AWS's
# Runtime Interface Emulator, first invocation to its answer, and the function's peak
# RSS. It asserts nothing; compare numbers within one report (the machine may
# be shared). About six and a half minutes on two cores.
# Arguments go to the bench binary; `hack/bench.sh --help` lists them
# (counts, rate, --smoke for tiny counts, --publish).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

cargo build --release -p signal-gateway -p bench --bins
KUBE_BINARIES_DIR="$(hack/kube-binaries.sh | tail -n 1)"
export KUBE_BINARIES_DIR
hack/tool.sh otelcol >/dev/null
# The Lambda cold path runs the release package under AWS's Runtime Interface Emulator.
SIGNAL_GATEWAY_LAMBDA_ZIP="$(hack/lambda.sh | tail -n 1)"
export SIGNAL_GATEWAY_LAMBDA_ZIP
hack/tool.sh rie >/dev/null
hack/tool.sh unzip >/dev/null
# The CPU profile of a saturated gateway (Debian's linux-perf).
PERF="$(hack/tool.sh perf | tail -n 1)"
export PERF

exec "${CARGO_TARGET_DIR:-target}/release/bench" "$@"
