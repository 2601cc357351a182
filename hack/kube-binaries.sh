#!/usr/bin/env bash
# Builds (first run) or reuses the pinned kube-apiserver and etcd, and prints
# the absolute directory holding both as the last line of output.
#
#   hack/kube-binaries.sh          build or reuse
#   hack/kube-binaries.sh --regen  regenerate hack/kube/go.mod's replace block
#                                  from k8s.io/kubernetes' own go.mod
set -euo pipefail

KUBE_VERSION=v1.37.2
STAGING_VERSION=v0.37.2
ETCD_VERSION=v3.6.16

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

if [[ "${1:-}" == "--regen" ]]; then
  mod="$(cd "$here/kube" && go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
  {
    printf 'module signal-gateway/hack/kube\n\ngo 1.26.0\n\ntool k8s.io/kubernetes/cmd/kube-apiserver\n\nrequire k8s.io/kubernetes %s\n\n' "$KUBE_VERSION"
    printf 'replace (\n' 
    awk -v v="$STAGING_VERSION" '/=> \.\/staging\/src\// {printf "\t%s => %s %s\n", $1, $1, v}' "$mod"
    printf ')\n'
  } >"$here/kube/go.mod"
  (cd "$here/kube" && go mod tidy)
  exit 0
fi

cache_root="${SIGNAL_GATEWAY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/signal-gateway}"
key="$(cat "$here/kube/go.mod" "$here/kube/go.sum" "$here/etcd/go.mod" "$here/etcd/go.sum" | sha256sum | cut -c1-12)"
out="$cache_root/kube-$KUBE_VERSION-etcd-$ETCD_VERSION-$key"
mkdir -p "$cache_root"

exec 9>"$cache_root/.kube-binaries.lock"
flock 9

if [[ ! -x "$out/kube-apiserver" || ! -x "$out/etcd" ]]; then
  tmp="$(mktemp -d "$cache_root/.build.XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT
  start=$SECONDS
  echo "building etcd $ETCD_VERSION" >&2
  (cd "$here/etcd" && go build -trimpath -o "$tmp/etcd" go.etcd.io/etcd/server/v3)
  echo "building kube-apiserver $KUBE_VERSION (several minutes on first run)" >&2
  pkg=k8s.io/component-base/version
  cpkg=k8s.io/client-go/pkg/version
  minor="$(echo "$KUBE_VERSION" | cut -d. -f2)"
  ldflags=""
  for p in "$pkg" "$cpkg"; do
    ldflags+=" -X $p.gitVersion=$KUBE_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
    ldflags+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  (cd "$here/kube" && go build -trimpath -ldflags "-s -w $ldflags" -o "$tmp/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver)
  rm -rf "$out"
  mv "$tmp" "$out"
  trap - EXIT
  echo "built in $((SECONDS - start))s" >&2
fi

echo "$out"
