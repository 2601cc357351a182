#!/usr/bin/env bash
# Runs signal-gateway on 127.0.0.1:8080 against a local control plane: a real
# kube-apiserver + etcd (built once by hack/kube-binaries.sh), with the CRD and
# the chart's RBAC installed. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

KUBE_BINARIES_DIR="$(hack/kube-binaries.sh | tail -n 1)"
export KUBE_BINARIES_DIR
cargo build --quiet --workspace --bins
bin="${CARGO_TARGET_DIR:-target}/debug"

dir="${LOCAL_DIR:-$PWD/target/local}"
mkdir -p "$dir"
fifo="$dir/testenv.out"
rm -f "$fifo"
mkfifo "$fifo"
# testenv exits when its stdin closes, i.e. when this script ends.
exec 3> >("$bin/testenv" --dir "$dir" >"$fifo")
trap 'exec 3>&-' EXIT
while IFS= read -r line; do
  echo "testenv: $line"
  [[ "$line" == READY ]] && break
done <"$fifo"

addr="${GATEWAY_LISTEN_ADDR:-127.0.0.1:8080}"
cat <<MSG

Owner resolution is off here (GATEWAY_OWNER_RESOLUTION=false): the sample alert
names a Pod that this empty control plane does not run.

Send a sample alert:
  curl -sS -X POST -H 'Content-Type: application/json' \\
    --data @tests/fixtures/alertmanager/v4-single-crashloop.json \\
    http://$addr/api/v1/signals/prometheus
See the result:
  KUBECONFIG=$dir/admin.kubeconfig kubectl get rr -n signal-gateway
  (kubectl from Debian's kubernetes-client; without it:
   curl -sk -H "Authorization: Bearer \$(grep token: $dir/admin.kubeconfig | awk '{print \$2}')" \\
     \$(grep server: $dir/admin.kubeconfig | awk '{print \$2}')/apis/kubernaut.ai/v1alpha1/namespaces/signal-gateway/remediationrequests)

MSG

KUBECONFIG="$dir/gateway.kubeconfig" \
GATEWAY_NAMESPACE=signal-gateway \
GATEWAY_LISTEN_ADDR="$addr" \
GATEWAY_AUTH="${GATEWAY_AUTH:-none}" \
GATEWAY_LOG_FORMAT="${GATEWAY_LOG_FORMAT:-text}" \
GATEWAY_OWNER_RESOLUTION="${GATEWAY_OWNER_RESOLUTION:-false}" \
POD_NAME="${POD_NAME:-local}" \
  "$bin/signal-gateway" serve
