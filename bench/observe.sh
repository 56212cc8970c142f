#!/usr/bin/env bash
# Observe fan-out through gatewayd: n observers (default 10,000) of one
# resource on an origin that notifies on demand, the observers in a
# process of their own (bench/fanout observe) on 100 sockets spread over
# 127.0.1.1-100. Measured: the time from the origin's send of one
# notification to its arrival at the last observer (several rounds), and
# gatewayd's VmRSS growth per observer, read from /proc, plus its CPU time.
#
# Targets: last observer < 100 ms; <= 1 KiB per observer.
# The result (JSON) goes to bench/results/observe.json.
#
#   bench/observe.sh [observers] [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-10000}
rounds=${2:-10}
source bench/common.sh
go build -o "$bin/fanout" ./bench/fanout

origin=127.0.0.1:5899
gw=127.0.0.1:5897
{ fanout_sections $gw "$n"; printf '[metrics]\nlisten = ""\n'; } >"$bin/gw.toml"

"$bin/fanout" origin -listen $origin &
"$bin/gatewayd" -config "$bin/gw.toml" -log-level warn &
gwpid=$!
sleep 1

echo "== $n observers, $rounds notifications; $(nproc) cores, $(go version | cut -d' ' -f3), $(date -u +%FT%TZ)"
timeout 110 "$bin/fanout" observe -gw $gw -origin $origin -pid $gwpid -n "$n" -rounds "$rounds" | tee "$out/observe.json"
python3 - "$out/observe.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
ok = lambda c: "met" if c else "NOT met"
print(f"last observer: p50 {r['last_p50_ms']:.1f} ms, max {r['last_max_ms']:.1f} ms over {len(r['rounds'])} notifications "
      f"(target < 100 ms: {ok(r['last_max_ms'] < 100)})")
print(f"gatewayd VmRSS {r['gw_before']['rss_kib']/1024:.1f} -> {r['gw_registered']['rss_kib']/1024:.1f} MiB: "
      f"{r['gw_rss_bytes_per_observer']:.0f} B per observer (target <= 1024: {ok(r['gw_rss_bytes_per_observer'] <= 1024)})")
print(f"gatewayd CPU: {r['gw_register_cpu_s']:.2f} s to register, {r['gw_cpu_ms_per_notification']:.0f} ms per notification")
PY
