#!/usr/bin/env bash
# Builds the gateway as a static x86_64 musl binary (the image's and the Lambda
# package's) and prints its absolute path as the last line of output.
#
# Rust is pinned by rust-toolchain.toml; C parts are compiled by Debian's
# musl-tools, pinned in hack/tool.sh. The binary is stripped.
#
# Environment: PROFILE (`release`, the default, or `dev`: an unoptimized binary
# that builds in a fraction of the time, for the tests), CARGO_TARGET_DIR (reused).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root="$(pwd)"

TARGET=x86_64-unknown-linux-musl
if ! rustup target list --installed | grep -qx "$TARGET"; then
  rustup target add "$TARGET" >&2
fi
hack/tool.sh musl-tools >/dev/null
profile="${PROFILE:-release}"
case "$profile" in
  release) profile_dir=release ;;
  dev) profile_dir=debug ;;
  *) echo "PROFILE must be release or dev, not '$profile'" >&2; exit 2 ;;
esac
CARGO_PROFILE_RELEASE_STRIP=symbols CARGO_PROFILE_DEV_STRIP=symbols CARGO_PROFILE_DEV_DEBUG=0 \
  CC_x86_64_unknown_linux_musl=musl-gcc \
  cargo build --profile "$profile" --locked --target "$TARGET" --bin signal-gateway >&2
echo "${CARGO_TARGET_DIR:-$root/target}/$TARGET/$profile_dir/signal-gateway"
