#!/usr/bin/env bash
# Installs (first run) or reuses a pinned tool the tests use, and prints its
# absolute path as the last line of output.
#
#   hack/tool.sh libfaketime   Debian's libfaketime (clock-skew tests)
#   hack/tool.sh alertmanager  Debian's prometheus-alertmanager
#   hack/tool.sh helm          Helm, built from the Go module proxy (hack/helm)
#   hack/tool.sh otelcol       a minimal OpenTelemetry Collector (OTLP receiver,
#                              file and Prometheus exporters), built from the Go
#                              module proxy (hack/otelcol)
#   hack/tool.sh promtool      Debian's promtool (package prometheus), which
#                              checks and unit-tests the chart's alert rules
#   hack/tool.sh ocibuild      assembles the container image archive with
#                              go-containerregistry, built from the Go module
#                              proxy (hack/ocibuild)
#   hack/tool.sh zip           Debian's zip (the Lambda package)
#   hack/tool.sh unzip         Debian's unzip (the Lambda tests unpack it)
#   hack/tool.sh rie           AWS's Lambda Runtime Interface Emulator
#                              (aws-lambda-rie), built from the Go module
#                              proxy (hack/rie)
set -euo pipefail

apt_install() {
  local pkg="$1" version="$2"
  if ! dpkg-query -W -f='${Status} ${Version}' "$pkg" 2>/dev/null | grep -qx "install ok installed $version"; then
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

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache_root="${SIGNAL_GATEWAY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/signal-gateway}"

# pin DIR MODULE VERSION: stop unless hack/DIR/go.mod pins MODULE at VERSION.
pin() {
  grep -q "$2 $3" "$here/$1/go.mod" || { echo "hack/$1/go.mod does not pin $2 $3" >&2; exit 1; }
}

# go_tool NAME VERSION PACKAGE [LDFLAGS]: build PACKAGE of the Go module
# hack/NAME once per go.mod+go.sum into the cache, and print the binary's path.
go_tool() {
  local name="$1" version="$2" pkg="$3" ldflags="${4:-}"
  local key out
  key="$(cat "$here/$name/go.mod" "$here/$name/go.sum" | sha256sum | cut -c1-12)"
  out="$cache_root/$name-$version-$key"
  mkdir -p "$cache_root"
  exec 9>"$cache_root/.$name.lock"
  flock 9
  if [[ ! -x "$out/$name" ]]; then
    tmp="$(mktemp -d "$cache_root/.build.XXXXXX")"
    trap 'rm -rf "$tmp"' EXIT
    local start=$SECONDS
    echo "building $name $version (a few minutes on first run)" >&2
    (cd "$here/$name" && go build -mod=readonly -trimpath -ldflags "-s -w $ldflags" -o "$tmp/$name" "$pkg")
    rm -rf "$out"
    mv "$tmp" "$out"
    trap - EXIT
    echo "built in $((SECONDS - start))s" >&2
  fi
  echo "$out/$name"
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
    pin helm helm.sh/helm/v3 v3.22.0
    go_tool helm v3.22.0 helm.sh/helm/v3/cmd/helm \
      "-X helm.sh/helm/v3/internal/version.version=v3.22.0 -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
    ;;
  otelcol)
    pin otelcol go.opentelemetry.io/collector/otelcol v0.161.0
    go_tool otelcol v0.161.0 .
    ;;
  promtool)
    apt_install prometheus 2.42.0+ds-5+deb12u1
    command -v promtool
    ;;
  musl-tools)
    apt_install musl-tools 1.2.3-1
    command -v musl-gcc
    ;;
  ocibuild)
    pin ocibuild github.com/google/go-containerregistry v0.22.1
    go_tool ocibuild v0.22.1 .
    ;;
  zip)
    apt_install zip 3.0-13
    command -v zip
    ;;
  unzip)
    apt_install unzip 6.0-28
    command -v unzip
    ;;
  perf)
    apt_install linux-perf 6.1.187-1
    command -v perf
    ;;
  rie)
    pin rie github.com/aws/aws-lambda-runtime-interface-emulator v0.0.0-20261030222936-bef5c4ba774d
    go_tool rie v0.0.0-20261030222936-bef5c4ba774d \
      github.com/aws/aws-lambda-runtime-interface-emulator/cmd/aws-lambda-rie
    ;;
  *)
    echo "usage: hack/tool.sh libfaketime|alertmanager|helm|otelcol|promtool|musl-tools|ocibuild|zip|unzip|perf|rie" >&2
    exit 2
    ;;
esac
