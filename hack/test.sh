#!/usr/bin/env bash
# Runs every check and test: formatting, clippy, unit, integration and
# end-to-end tests against a real kube-apiserver + etcd built by
# hack/kube-binaries.sh (cached after the first build), and Debian's
# libfaketime and prometheus-alertmanager, and Helm and an OpenTelemetry
# Collector built from the Go module proxy (hack/tool.sh).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

KUBE_BINARIES_DIR="$(hack/kube-binaries.sh | tail -n 1)"
export KUBE_BINARIES_DIR
hack/tool.sh libfaketime >/dev/null
hack/tool.sh alertmanager >/dev/null
hack/tool.sh helm >/dev/null
hack/tool.sh otelcol >/dev/null
PROMTOOL="$(hack/tool.sh promtool | tail -n 1)"
# The container image (an unoptimized musl build, to keep CI short; the image
# and Knative tests run its entrypoint from the unpacked layers).
SIGNAL_GATEWAY_IMAGE="$(IMAGE_PROFILE=dev hack/image.sh | tail -n 1)"
export SIGNAL_GATEWAY_IMAGE
# The Lambda package (unoptimized, as the image), run under AWS's Runtime
# Interface Emulator by tests/e2e/lambda.rs.
SIGNAL_GATEWAY_LAMBDA_ZIP="$(LAMBDA_PROFILE=dev hack/lambda.sh | tail -n 1)"
export SIGNAL_GATEWAY_LAMBDA_ZIP
hack/tool.sh rie >/dev/null
hack/tool.sh unzip >/dev/null

cargo fmt --all --check
cargo clippy --workspace --all-targets --all-features -- -D warnings
# The chart's alert rules: valid, and each alert fires and stays silent as its
# unit tests say (tests/rules).
"$PROMTOOL" check rules chart/files/gateway.rules.yaml
"$PROMTOOL" test rules tests/rules/gateway.rules.test.yaml
# The end-to-end tests are one binary (tests/e2e); its chaos tests need the
# test-only switches, which only a build with the `chaos` feature accepts.
cargo test --workspace --features chaos "$@"
# Fuzz the decoders and name derivation, bounded (FUZZ_SECONDS per target, default 25).
hack/fuzz.sh
