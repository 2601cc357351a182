#!/usr/bin/env bash
# Benchmarks signal-gateway and writes target/bench/report.md (also printed):
# latency and Kubernetes API requests per signal with the lock on and off,
# a storm over three replicas, throughput, memory and cold start. It asserts
# nothing; compare numbers within one report (the machine may be shared).
# Arguments go to the bench binary: [--n N] [--cold-starts K].
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

cargo build --release --workspace --bins
KUBE_BINARIES_DIR="$(hack/kube-binaries.sh | tail -n 1)"
export KUBE_BINARIES_DIR

exec "${CARGO_TARGET_DIR:-target}/release/bench" "$@"
