#!/usr/bin/env bash
# Installs (first run) or reuses a pinned tool the tests use, and prints its
# absolute path as the last line of output.
#
#   hack/tool.sh libfaketime   Debian's libfaketime (clock-skew tests)
#   hack/tool.sh alertmanager  Debian's prometheus-alertmanager
#   hack/tool.sh helm          Helm, built from the Go module proxy (hack/helm)
#   hack/tool.sh otelcol       a minimal OpenTelemetry Collector (OTLP receiver,
#                              file exporter), built from the Go module proxy
#                              (hack/otelcol)
set -euo pipefail

apt_install() {
  local pkg="$1" version="$2"
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    echo "installing $pkg=$version from Debian" >&2
    export DEBIAN_FRONTEND=noninteractive
    local sudo=""
    [[ "$(id -u)" == 0 ]] || sudo="sudo"
    if ! $sudo apt-get install -y --no-install-recommends "$pkg=$version" >&2; then
      $sudo apt-get update >&2
      $sudo apt-get install -y --no-install-recommends "$pkg=$version" >&2
    fi
  fi
}

case "${1:-}" in
  libfaketime)
    apt_install libfaketime 0.9.10-2.1
    lib="$(dpkg -L libfaketime | grep -E '/libfaketime\.so\.1$' | head -n 1)"
    [[ -n "$lib" ]] || { echo "libfaketime.so.1 not found after install" >&2; exit 1; }
    echo "$lib"
    ;;
  alertmanager)
    apt_install prometheus-alertmanager 0.25.0-1+b4
    command -v prometheus-alertmanager
    ;;
  helm)
    HELM_VERSION=v3.22.0
    here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
    grep -q "helm.sh/helm/v3 $HELM_VERSION" "$here/helm/go.mod" \
      || { echo "hack/helm/go.mod does not pin helm.sh/helm/v3 $HELM_VERSION" >&2; exit 1; }
    cache_root="${SIGNAL_GATEWAY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/signal-gateway}"
    key="$(cat "$here/helm/go.mod" "$here/helm/go.sum" | sha256sum | cut -c1-12)"
    out="$cache_root/helm-$HELM_VERSION-$key"
    mkdir -p "$cache_root"
    exec 9>"$cache_root/.helm.lock"
    flock 9
    if [[ ! -x "$out/helm" ]]; then
      tmp="$(mktemp -d "$cache_root/.build.XXXXXX")"
      trap 'rm -rf "$tmp"' EXIT
      start=$SECONDS
      echo "building helm $HELM_VERSION (a few minutes on first run)" >&2
      (cd "$here/helm" && go build -mod=readonly -trimpath \
        -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean" \
        -o "$tmp/helm" helm.sh/helm/v3/cmd/helm)
      rm -rf "$out"
      mv "$tmp" "$out"
      trap - EXIT
      echo "built in $((SECONDS - start))s" >&2
    fi
    echo "$out/helm"
    ;;
  otelcol)
    OTELCOL_RELEASE=v0.161.0
    here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
    grep -q "go.opentelemetry.io/collector/otelcol $OTELCOL_RELEASE" "$here/otelcol/go.mod" \
      || { echo "hack/otelcol/go.mod does not pin go.opentelemetry.io/collector/otelcol $OTELCOL_RELEASE" >&2; exit 1; }
    cache_root="${SIGNAL_GATEWAY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/signal-gateway}"
    key="$(cat "$here/otelcol/go.mod" "$here/otelcol/go.sum" | sha256sum | cut -c1-12)"
    out="$cache_root/otelcol-$OTELCOL_RELEASE-$key"
    mkdir -p "$cache_root"
    exec 9>"$cache_root/.otelcol.lock"
    flock 9
    if [[ ! -x "$out/otelcol" ]]; then
      tmp="$(mktemp -d "$cache_root/.build.XXXXXX")"
      trap 'rm -rf "$tmp"' EXIT
      start=$SECONDS
      echo "building otelcol $OTELCOL_RELEASE (a few minutes on first run)" >&2
      (cd "$here/otelcol" && go build -mod=readonly -trimpath -ldflags "-s -w" \
        -o "$tmp/otelcol" .)
      rm -rf "$out"
      mv "$tmp" "$out"
      trap - EXIT
      echo "built in $((SECONDS - start))s" >&2
    fi
    echo "$out/otelcol"
    ;;
  *)
    echo "usage: hack/tool.sh libfaketime|alertmanager|helm|otelcol" >&2
    exit 2
    ;;
esac
