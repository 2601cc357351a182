#!/usr/bin/env bash
# Installs (first run) or reuses a pinned tool the tests use, and prints its
# absolute path as the last line of output.
#
#   hack/tool.sh libfaketime   Debian's libfaketime (clock-skew tests)
#   hack/tool.sh alertmanager  Debian's prometheus-alertmanager
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
  *)
    echo "usage: hack/tool.sh libfaketime|alertmanager" >&2
    exit 2
    ;;
esac
