#!/usr/bin/env bash
# Prints the directory holding Knative Serving's CRDs
# (config/core/300-resources of the knative.dev/serving Go module at the pinned
# version), taken from the Go module cache (downloaded on first use).
set -euo pipefail
KNATIVE_SERVING_VERSION=v0.51.0
dir="$(cd /tmp && GOFLAGS=-mod=mod go mod download -json "knative.dev/serving@$KNATIVE_SERVING_VERSION" \
  | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
[[ -d "$dir/config/core/300-resources" ]] || { echo "no Knative Serving CRDs in $dir" >&2; exit 1; }
echo "$dir/config/core/300-resources"
