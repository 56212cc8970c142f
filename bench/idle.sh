#!/usr/bin/env bash
# What an idle TCP connection (RFC 8323) costs gatewayd, split into what
# is live and what the runtime merely has not given back to the system.
# For each kind of connection, a fresh gatewayd takes a TCP forwarding
# load (so that its heap and stacks are those of a daemon that worked),
# then n connections that each made one request and stay open: "local"
# asks the proxy's /.well-known/core, "forward" a Proxy-Uri that gatewayd
# forwards to a UDP origin. Before and after the connections, and again
# after a collection forced through /debug/pprof/heap?gc=1, it reads
# VmRSS and the runtime's go_memstats_{stack,heap}_inuse_bytes from
# /metrics, and heap_idle less heap_released (memory free in the runtime
# but not given back to the system, which RSS counts), and prints the
# growth per connection; then once more after [wait] seconds, in which
# the runtime's scavenger gives free pages back at its own pace.
#
#   bench/idle.sh [idle connections] [load seconds] [wait] [kinds...]
set -euo pipefail
cd "$(dirname "$0")/.."
nidle=${1:-2000}
secs=${2:-5}
wait=${3:-30}
shift 3 2>/dev/null || shift $#
kinds=${*:-local forward}
source bench/common.sh
go build -o "$bin/coapbench" ./bench/coapbench

fwd=127.0.0.1:5829
gw=127.0.0.1:5827
adm=127.0.0.1:5826
cat >"$bin/gw.toml" <<TOML
[proxy]
listen = ["tcp://$gw"]
allow = ["127.0.0.1/32"]
timeout = "3s"
max_connections = $((nidle + 100))
[metrics]
listen = "$adm"
pprof = true
console = false
TOML
ulimit -n $((nidle * 2 + 1000)) 2>/dev/null || true
"$bin/coapbench" origin -listen $fwd -max-age 0 &

# snap: VmRSS, stack in use, heap in use, free but kept, in bytes.
snap() {
	local rss
	rss=$(awk '/^VmRSS/ {print $2 * 1024}' /proc/$gwpid/status)
	curl -fsS "http://$adm/metrics" | awk -v rss="$rss" '
		/^go_memstats_stack_inuse_bytes / {s = $2}
		/^go_memstats_heap_inuse_bytes / {h = $2}
		/^go_memstats_heap_idle_bytes / {i = $2}
		/^go_memstats_heap_released_bytes / {r = $2}
		END {printf "%d %d %d %d\n", rss, s, h, i - r}'
}
gc() { curl -fsS -o /dev/null "http://$adm/debug/pprof/heap?gc=1"; sleep 1; }
per() { # label before after
	read -r r0 s0 h0 f0 <<<"$2"
	read -r r1 s1 h1 f1 <<<"$3"
	printf "  %-20s RSS %6d B  live %6d B (stack %5d, heap %5d)  free, not returned %6d B\n" "$1" \
		$(((r1 - r0) / nidle)) $(((s1 + h1 - s0 - h0) / nidle)) $(((s1 - s0) / nidle)) $(((h1 - h0) / nidle)) $(((f1 - f0) / nidle))
}

echo "== $nidle idle connections after a ${secs}s TCP load, $(nproc) cores, $(go env GOVERSION), load $(cut -d' ' -f1 /proc/loadavg), $(date -u +%FT%TZ)"
for kind in $kinds; do
	"$bin/gatewayd" -config "$bin/gw.toml" -log-level warn &
	gwpid=$!
	until curl -fsS -o /dev/null "http://$adm/metrics" 2>/dev/null; do sleep 0.2; done
	"$bin/coapbench" load -c 16 -d "${secs}s" -over tcp -proxy $gw -target coap://$fwd/bench >/dev/null
	sleep 2
	gc
	base=$(snap)
	target=()
	[ "$kind" = forward ] && target=(-target coap://$fwd/bench)
	open_idle $gw "$nidle" "${target[@]}"
	sleep 3
	open=$(snap)
	gc
	gced=$(snap)
	echo "$kind:"
	per "open" "$base" "$open"
	per "after a forced GC" "$base" "$gced"
	sleep "$wait"
	per "${wait}s later" "$base" "$(snap)"
	kill $idlepid $gwpid
	wait $idlepid $gwpid 2>/dev/null || true
done
