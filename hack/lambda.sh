#!/usr/bin/env bash
# Builds the AWS Lambda package of signal-gateway and prints the absolute path of
# the zip as the last line of output.
#
# The zip holds one file, `bootstrap`: the gateway's static x86_64 musl binary
# (hack/musl.sh), which the `provided.al2023` runtime starts on an x86_64
# function. It serves HTTP events and the sweep's scheduled events; see
# docs/lambda.md and deploy/lambda/template.yaml. The file's time is
# SOURCE_DATE_EPOCH (default: the last commit's time), so the same binary gives
# the same zip.
#
# Environment: LAMBDA_PROFILE (`release`, the default, or `dev`: unoptimized,
# for the tests), CARGO_TARGET_DIR (reused).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root="$(pwd)"

binary="$(PROFILE="${LAMBDA_PROFILE:-release}" hack/musl.sh | tail -n 1)"
zip="$(hack/tool.sh zip | tail -n 1)"
out_dir="${CARGO_TARGET_DIR:-$root/target}/lambda"
mkdir -p "$out_dir"
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
cp "$binary" "$stage/bootstrap"
chmod 0755 "$stage/bootstrap"
epoch="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}"
touch -d "@$epoch" "$stage/bootstrap"
out="$out_dir/signal-gateway-lambda.zip"
rm -f "$out"
# -X: no extra attributes (uid/gid, times beyond the file's), so the zip is reproducible.
(cd "$stage" && TZ=UTC "$zip" -q -X "$out" bootstrap)
echo "lambda package: $(du -h "$out" | cut -f1)" >&2
echo "$out"
