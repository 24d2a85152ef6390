#!/usr/bin/env bash
# Side-by-side benchmarks: installs the Debian peers if missing, builds the release binary,
# runs the criterion groups (shardgate and each peer pinned to the same CPU(s), load and
# backends on the others) and prints one `<group> <peer> ratio=<shardgate/peer>` line each.
# Usage: bash benches/run-peers.sh [criterion filter]
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v haproxy >/dev/null || need+=(haproxy)
command -v nginx >/dev/null || need+=(nginx)
[ -e /usr/lib/nginx/modules/ngx_stream_module.so ] || need+=(libnginx-mod-stream)
command -v knotd >/dev/null || need+=(knot)
command -v nsd >/dev/null || need+=(nsd)
command -v dnsperf >/dev/null || need+=(dnsperf)
command -v freeradius >/dev/null || need+=(freeradius)
if ((${#need[@]})); then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
cargo build --release -p shardgate-appliance
cargo bench -p shardgate-benches --bench tcp_relay_vs_haproxy -- "${1:-}"
# The same TCP workloads in alternating rounds (median of per-round ratios; see the bench's doc).
cargo bench -p shardgate-benches --bench tcp_relay_alternating -- "${1:-}"
cargo bench -p shardgate-benches --bench tls_vs_haproxy -- "${1:-}"
cargo bench -p shardgate-benches --bench http_vs_nginx_haproxy -- "${1:-}"
cargo bench -p shardgate-benches --bench dns_vs_knot -- "${1:-}"
cargo bench -p shardgate-benches --bench radius_access_requests -- "${1:-}"
cargo run --release -q -p shardgate-benches --bin ratio-report
