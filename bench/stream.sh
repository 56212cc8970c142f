#!/usr/bin/env bash
# Forwarding from clients over TCP and WebSockets (RFC 8323), next to UDP,
# through gatewayd and through libcoap's coap-server -P over the same
# transport (libcoap 4.3.1 has no WebSockets), to one UDP origin that
# answers with Max-Age 0, so that every request crosses the proxy. The
# loads alternate, gatewayd then libcoap, for a number of rounds.
# Then the memory of idle connections: gatewayd's RSS before and after n
# TCP connections that each finished the CSM exchange and one request.
#
#   bench/stream.sh [clients] [seconds] [rounds] [idle connections]
set -euo pipefail
cd "$(dirname "$0")/.."
clients=${1:-16}
secs=${2:-5}
rounds=${3:-3}
nidle=${4:-2000}
command -v coap-server-notls >/dev/null || ./scripts/test-deps.sh
source bench/common.sh
go build -o "$bin/coapbench" ./bench/coapbench

fwd=127.0.0.1:5819
gw=127.0.0.1:5817
gwws=127.0.0.1:5818
lc=127.0.0.1:5816
cat >"$bin/gw.toml" <<TOML
[proxy]
listen = ["udp://$gw", "tcp://$gw", "ws://$gwws"]
allow = ["127.0.0.1/32"]
timeout = "3s"
max_connections = $((nidle + 100))
[metrics]
listen = ""
TOML
ulimit -n $((nidle * 2 + 1000)) 2>/dev/null || true

"$bin/coapbench" origin -listen $fwd -max-age 0 &
"$bin/gatewayd" -config "$bin/gw.toml" -log-level warn &
gwpid=$!
coap-server-notls -A 127.0.0.1 -p ${lc##*:} -P ",libcoap-proxy" -v 0 &
sleep 1

load() { "$bin/coapbench" load -c "$clients" -d "${secs}s" -target coap://$fwd/bench "$@"; }
echo "== $clients clients, ${secs}s each, $rounds rounds, $(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg), $(date -u +%FT%TZ)"
for r in $(seq "$rounds"); do
	echo -n "udp gatewayd  #$r "; load -proxy $gw | tee "$out/stream-udp-gatewayd-$r.json"
	echo -n "udp libcoap   #$r "; load -proxy $lc | tee "$out/stream-udp-libcoap-$r.json"
	echo -n "tcp gatewayd  #$r "; load -over tcp -proxy $gw | tee "$out/stream-tcp-gatewayd-$r.json"
	echo -n "tcp libcoap   #$r "; load -over tcp -proxy $lc | tee "$out/stream-tcp-libcoap-$r.json"
	echo -n "ws  gatewayd  #$r "; load -over ws -proxy $gwws | tee "$out/stream-ws-gatewayd-$r.json"
done

rss() { awk '/^VmRSS/ {print $2}' /proc/$1/status; }
sleep 2
before=$(rss $gwpid)
open_idle $gw "$nidle"
sleep 3
after=$(rss $gwpid)
echo "idle tcp: $nidle connections, gatewayd RSS $before KiB -> $after KiB: $(( (after - before) * 1024 / nidle )) B per connection"
kill $idlepid
