#!/usr/bin/env bash
# Forwarded requests per second and latency through gatewayd and through
# libcoap's coap-server acting as a forward proxy (-P), in one run, with the
# same origin and the same load generator. Results go to bench/results/.
#
#   bench/proxy.sh [clients] [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
clients=${1:-16}
secs=${2:-10}
out=bench/results
mkdir -p "$out"
bin=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$bin"' EXIT

command -v coap-server-notls >/dev/null || ./scripts/test-deps.sh
CGO_ENABLED=0 go build -trimpath -o "$bin/gatewayd" ./cmd/gatewayd
go build -o "$bin/coapbench" ./bench/coapbench

origin=127.0.0.1:5799
gw=127.0.0.1:5797
lc=127.0.0.1:5798
cat >"$bin/gw.toml" <<TOML
[proxy]
listen = ["udp://$gw"]
allow = ["127.0.0.1/32"]
timeout = "3s"
TOML

"$bin/coapbench" origin -listen $origin &
"$bin/gatewayd" -config "$bin/gw.toml" -log-level warn &
coap-server-notls -A 127.0.0.1 -p ${lc##*:} -P ",libcoap-proxy" -v 0 &
"$bin/coapbench" echo -listen 127.0.0.1:5796 &
sleep 1

target=coap://$origin/bench
echo "== $clients clients, ${secs}s each, $(nproc) cores, $(date -u +%FT%TZ)"
echo -n "direct origin  "; "$bin/coapbench" load -target $target -c "$clients" -d "${secs}s" | tee "$out/direct.json"
echo -n "udp echo       "; "$bin/coapbench" load -any -target coap://127.0.0.1:5796/x -c "$clients" -d "${secs}s" | tee "$out/echo.json"
echo -n "gatewayd       "; "$bin/coapbench" load -proxy $gw -target $target -c "$clients" -d "${secs}s" | tee "$out/gatewayd.json"
echo -n "libcoap -P     "; "$bin/coapbench" load -proxy $lc -target $target -c "$clients" -d "${secs}s" | tee "$out/libcoap.json"
python3 - "$out" <<'PY'
import json, sys
d = sys.argv[1]
g = json.load(open(d + "/gatewayd.json")); l = json.load(open(d + "/libcoap.json"))
ratio = g["rps"] / l["rps"] if l["rps"] else float("inf")
print(f"gatewayd/libcoap forwarded req/s: {ratio:.2f}x (target >= 2x)")
PY
