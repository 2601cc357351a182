#!/usr/bin/env bash
# Builds the signal-gateway container image without a container daemon and
# prints the absolute path of its archive as the last line of output.
#
# The archive is one tar that is both an OCI image layout and a `docker save`
# archive: `docker load -i`, `podman load -i`, `ctr images import`,
# `skopeo copy oci-archive:PATH docker://REGISTRY/...` all take it.
#
# What goes into the image, each from a pinned source:
#   - the gateway, a static musl binary (hack/musl.sh);
#   - /etc/ssl/certs/ca-certificates.crt, the Mozilla roots of Debian's
#     ca-certificates $CA_CERTIFICATES_VERSION (checked against its SHA-256);
#   - /etc/passwd and /etc/group naming the numeric user $IMAGE_UID.
# The image is assembled by hack/ocibuild (go-containerregistry, pinned in
# hack/ocibuild/go.mod) on an empty base; timestamps are SOURCE_DATE_EPOCH
# (default: the last commit's time), so the same inputs give the same archive.
#
# Environment: IMAGE_REPOSITORY (default: the chart's image.repository),
# IMAGE_TAG (default: the chart's appVersion), CARGO_TARGET_DIR (reused),
# IMAGE_PROFILE (`release`, the default, or `dev`: an unoptimized binary that
# builds in a fraction of the time; the tests use it, since what they check of
# the image does not depend on optimization).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root="$(pwd)"

CA_CERTIFICATES_VERSION=20250419~deb12u2
CA_CERTIFICATES_SHA256=b9f76b5271a7ac373fd5e7e1b5b826a71ddd702b42a0d104955ecb1acfffc94b
IMAGE_UID=65532

app_version="$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\} *$/\1/p' chart/Chart.yaml)"
chart_repository="$(sed -n '/^image:/,/^[^ ]/s/^  repository: *\(.*\)$/\1/p' chart/values.yaml)"
repository="${IMAGE_REPOSITORY:-$chart_repository}"
tag="${IMAGE_TAG:-$app_version}"
[[ -n "$repository" && -n "$tag" ]] || { echo "no image repository or tag in chart/" >&2; exit 1; }


start=$SECONDS
binary="$(PROFILE="${IMAGE_PROFILE:-release}" hack/musl.sh | tail -n 1)"
target_dir="${CARGO_TARGET_DIR:-$root/target}"

cache_root="${SIGNAL_GATEWAY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/signal-gateway}"
ca_dir="$cache_root/ca-certificates-$CA_CERTIFICATES_VERSION"
if [[ ! -s "$ca_dir/ca-certificates.crt" ]]; then
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && apt-get download "ca-certificates=$CA_CERTIFICATES_VERSION" >&2) || {
    apt-get update >&2 && (cd "$tmp" && apt-get download "ca-certificates=$CA_CERTIFICATES_VERSION" >&2)
  }
  deb="$(ls "$tmp"/ca-certificates_*.deb)"
  echo "$CA_CERTIFICATES_SHA256  $deb" | sha256sum -c --quiet - >&2
  dpkg-deb -x "$deb" "$tmp/root"
  mkdir -p "$ca_dir"
  # What update-ca-certificates would write: every Mozilla root, in name order.
  LC_ALL=C find "$tmp/root/usr/share/ca-certificates/mozilla" -name '*.crt' | LC_ALL=C sort \
    | xargs cat > "$ca_dir/ca-certificates.crt.tmp"
  mv "$ca_dir/ca-certificates.crt.tmp" "$ca_dir/ca-certificates.crt"
  rm -rf "$tmp"
  trap - EXIT
fi

ocibuild="$(hack/tool.sh ocibuild | tail -n 1)"
revision="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
epoch="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}"
created="$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)"
out_dir="$target_dir/image"
mkdir -p "$out_dir"
out="$out_dir/signal-gateway-$tag.oci.tar"
"$ocibuild" \
  -binary "$binary" \
  -ca-bundle "$ca_dir/ca-certificates.crt" \
  -uid "$IMAGE_UID" \
  -created "$epoch" \
  -ref "$repository:$tag" \
  -out "$out" \
  -label "org.opencontainers.image.title=signal-gateway" \
  -label "org.opencontainers.image.description=Turns Alertmanager and Kubernetes Event signals into exactly one active RemediationRequest per problem" \
  -label "org.opencontainers.image.version=$tag" \
  -label "org.opencontainers.image.revision=$revision" \
  -label "org.opencontainers.image.created=$created" \
  -label "org.opencontainers.image.licenses=Apache-2.0" \
  -label "org.opencontainers.image.base.name=scratch"
echo "image $repository:$tag: $(du -h "$out" | cut -f1) in $((SECONDS - start))s" >&2
echo "$out"
