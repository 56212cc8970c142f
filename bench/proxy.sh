#!/usr/bin/env bash
# gatewayd against libcoap's coap-server acting as a forward proxy (-P), in
# one run, with the same origins and the same load generator:
#
#  - forwarding: the origin answers with Max-Age 0, so nothing is cached
#    and every request crosses the proxy to the origin and back;
#  - cache hits: the origin answers with Max-Age 60, so gatewayd answers
#    from its cache; a one-goroutine UDP echo server is the machine's limit.
#
# The forwarding loads alternate, gatewayd then libcoap, for a number of
# rounds; the ratio reported is the median of the rounds' ratios, since a
# VM's host can move a single load by a fifth.
#
# Results (JSON lines) go to bench/results/.
#
#   bench/proxy.sh [clients] [seconds] [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
clients=${1:-16}
secs=${2:-10}
rounds=${3:-5}
command -v coap-server-notls >/dev/null || ./scripts/test-deps.sh
source bench/common.sh
go build -o "$bin/coapbench" ./bench/coapbench

fwd=127.0.0.1:5799    # origin, Max-Age 0
cached=127.0.0.1:5795 # origin, Max-Age 60
echo=127.0.0.1:5796
gw=127.0.0.1:5797
lc=127.0.0.1:5798
cat >"$bin/gw.toml" <<TOML
[proxy]
listen = ["udp://$gw"]
allow = ["127.0.0.1/32"]
timeout = "3s"
[metrics]
listen = ""
TOML

"$bin/coapbench" origin -listen $fwd -max-age 0 &
"$bin/coapbench" origin -listen $cached -max-age 60 &
"$bin/coapbench" echo -listen $echo &
"$bin/gatewayd" -config "$bin/gw.toml" -log-level warn &
coap-server-notls -A 127.0.0.1 -p ${lc##*:} -P ",libcoap-proxy" -v 0 &
sleep 1

load() { "$bin/coapbench" load -c "$clients" -d "${secs}s" "$@"; }
echo "== $clients clients, ${secs}s each, $rounds rounds, $(nproc) cores, $(date -u +%FT%TZ)"
echo "-- forwarding (origin Max-Age 0)"
echo -n "origin direct      "; load -target coap://$fwd/bench | tee "$out/direct.json"
for r in $(seq "$rounds"); do
	echo -n "gatewayd        #$r "; load -proxy $gw -target coap://$fwd/bench | tee "$out/gatewayd-$r.json"
	echo -n "libcoap -P      #$r "; load -proxy $lc -target coap://$fwd/bench | tee "$out/libcoap-$r.json"
done
echo "-- cache hits (origin Max-Age 60)"
echo -n "udp echo           "; load -any -target coap://$echo/x | tee "$out/echo.json"
echo -n "gatewayd cache hit "; load -proxy $gw -target coap://$cached/bench | tee "$out/gatewayd-cache.json"
python3 - "$out" "$rounds" <<'PY'
import json, statistics, sys
d, n = sys.argv[1], int(sys.argv[2])
j = lambda name: json.load(open(f"{d}/{name}.json"))
g = [j(f"gatewayd-{r}")["rps"] for r in range(1, n + 1)]
l = [j(f"libcoap-{r}")["rps"] for r in range(1, n + 1)]
ratios = [a / b for a, b in zip(g, l)]
print("forwarding: gatewayd/libcoap req/s by round = " + ", ".join(f"{x:.2f}x" for x in ratios))
print(f"forwarding: median {statistics.median(ratios):.2f}x (target >= 2x); gatewayd median {statistics.median(g):.0f} req/s, libcoap {statistics.median(l):.0f}")
e, c = j("echo"), j("gatewayd-cache")
print(f"cache hits: gatewayd/echo req/s = {100*c['rps']/e['rps']:.0f}% (target >= 70%)")
PY
