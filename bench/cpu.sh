#!/usr/bin/env bash
# CPU time per forwarded request, user and system, of gatewayd built at
# one or more commits and of libcoap's coap-server -P, over TCP or UDP, to
# one UDP origin that answers with Max-Age 0. Each proxy serves a load in
# turn, round after round; its CPU time is read from /proc/<pid>/stat
# before and after the load and divided by the requests answered. A
# commit may name the GOMAXPROCS to run it with after a comma.
#
#   bench/cpu.sh [rounds] [tcp|udp] [commit[,procs] ...]
#
# By default 6 rounds over TCP of the checkout's HEAD; for example
# `bench/cpu.sh 6 tcp main HEAD HEAD,1`.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-6}
over=${2:-tcp}
shift $(($# < 2 ? $# : 2))
[ $# -gt 0 ] || set -- HEAD
case $over in tcp | udp) ;; *) echo "transport $over: tcp or udp" >&2; exit 2 ;; esac
command -v coap-server-notls >/dev/null || ./scripts/test-deps.sh
source bench/common.sh
go build -o "$bin/coapbench" ./bench/coapbench

# One binary per commit, built from a clean tree of it (git archive),
# which HEAD and HEAD,1 share.
declare -A exe
for spec in "$@"; do
	c=$(git rev-parse --short "${spec%%,*}^{commit}")
	if [ ! -x "$bin/gw-$c" ]; then
		mkdir "$bin/src-$c"
		git archive "$c" | tar -x -C "$bin/src-$c"
		(cd "$bin/src-$c" && CGO_ENABLED=0 go build -trimpath -o "$bin/gw-$c" ./cmd/gatewayd)
	fi
	exe[$spec]=$bin/gw-$c
done

origin=127.0.0.1:5829
gw=127.0.0.1:5827
lc=127.0.0.1:5826
cat >"$bin/gw.toml" <<TOML
[proxy]
listen = ["udp://$gw", "tcp://$gw"]
allow = ["127.0.0.1/32"]
timeout = "3s"
[metrics]
listen = ""
TOML
"$bin/coapbench" origin -listen $origin -max-age 0 &
coap-server-notls -A 127.0.0.1 -p ${lc##*:} -P ",libcoap-proxy" -v 0 &
lcpid=$!
sleep 1

tck=$(getconf CLK_TCK)
ticks() { awk '{print $14, $15}' "/proc/$1/stat"; }
flag=""
[ "$over" = tcp ] && flag="-over tcp"
# measure pid addr label: one load through the proxy at addr.
measure() {
	local u0 s0 u1 s1 r
	read -r u0 s0 < <(ticks "$1")
	r=$("$bin/coapbench" load -c 16 -d 5s $flag -proxy "$2" -target coap://$origin/bench)
	read -r u1 s1 < <(ticks "$1")
	python3 - "$3" "$r" $((u1 - u0)) $((s1 - s0)) "$tck" <<'PY'
import json, sys
label, r, u, s, tck = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
n = r["requests"]
us = lambda t: t / tck / n * 1e6
print(f"{label:<20} {r['rps']:8.0f} req/s  user {us(u):5.1f}  system {us(s):5.1f}  total {us(u + s):5.1f} µs/request")
PY
}

echo "== $over, $rounds rounds, 16 clients, 5 s a load, $(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg), $(go version | cut -d' ' -f3), $(date -u +%FT%TZ)"
for r in $(seq "$rounds"); do
	for spec in "$@"; do
		procs=$(nproc)
		[ "$spec" != "${spec#*,}" ] && procs=${spec#*,}
		GOMAXPROCS=$procs "${exe[$spec]}" -config "$bin/gw.toml" -log-level warn &
		pid=$!
		until [ "$(ss -Htuln "sport = :${gw##*:}" | wc -l)" -ge 2 ]; do
			kill -0 $pid || { echo "gatewayd $spec did not start" >&2; exit 1; }
			sleep 0.1
		done
		measure $pid $gw "gatewayd $spec"
		kill $pid
		wait $pid 2>/dev/null || true
	done
	measure $lcpid $lc "libcoap"
done
