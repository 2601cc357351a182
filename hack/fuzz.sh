#!/usr/bin/env bash
# Runs every cargo-fuzz target (fuzz/) for a bounded time, from a seed corpus of
# tests/fixtures. cargo-fuzz comes from crates.io, pinned, installed once into the
# cache. The pinned stable toolchain runs it with RUSTC_BOOTSTRAP=1 (cargo-fuzz passes
# -Z flags) and without a sanitizer (the crate forbids unsafe code; libFuzzer still
# finds panics, overflows, aborts and the targets' own assertions). A crash fails the
# run and leaves its input in fuzz/artifacts/<target>/: keep it as a unit test.
#
#   FUZZ_SECONDS=25 hack/fuzz.sh [target...]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

version=0.13.1
cache_root="${SIGNAL_GATEWAY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/signal-gateway}"
root="$cache_root/cargo-fuzz-$version"
if [[ ! -x "$root/bin/cargo-fuzz" ]]; then
  echo "installing cargo-fuzz $version from crates.io" >&2
  cargo install --locked "cargo-fuzz@$version" --root "$root" >&2
fi
export PATH="$root/bin:$PATH" RUSTC_BOOTSTRAP=1

seconds="${FUZZ_SECONDS:-25}"
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(alertmanager event names)
cargo fuzz build --sanitizer none --fuzz-dir fuzz
for target in "${targets[@]}"; do
  corpus="fuzz/corpus/$target"
  mkdir -p "$corpus"
  case "$target" in
    alertmanager) cp tests/fixtures/alertmanager/*.json "$corpus/" ;;
    event) cp tests/fixtures/events/*.json "$corpus/" ;;
    names) printf 'eu-1\0Pod\0prod\0web-0' >"$corpus/seed" ;;
  esac
  echo "fuzzing $target for ${seconds}s" >&2
  cargo fuzz run --sanitizer none --fuzz-dir fuzz "$target" "$corpus" -- \
    -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=2048 -print_final_stats=1
done
