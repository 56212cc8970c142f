#!/usr/bin/env bash
# What floods leave in gatewayd's memory: its VmRSS (from /proc) every
# second, idle, during each flood and for a quiet period after it. The
# floods (bench/flood): malformed datagrams (some large, some earning an
# RST), junk requests the proxy answers itself, and spoofed CON GETs to a
# silent origin from 64 addresses × 64 ports, none acknowledging.
#
# The samples and a summary (idle, each flood's peak, the end of each
# quiet period) go to bench/results/flood.json.
#
#   bench/flood.sh [flood seconds] [quiet seconds] [datagrams per second]
set -euo pipefail
cd "$(dirname "$0")/.."
flood=${1:-10}
quiet=${2:-60}
rate=${3:-20000}
source bench/common.sh
go build -o "$bin/flood" ./bench/flood
echo "== $(nproc) cores, $(go version | cut -d' ' -f3), $(date -u +%FT%TZ)"
"$bin/flood" -gatewayd "$bin/gatewayd" -flood "${flood}s" -settle "${quiet}s" -rate "$rate" | tee "$out/flood.txt"
tail -n 1 "$out/flood.txt" >"$out/flood.json"
python3 - "$out/flood.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
print(f"idle VmRSS {d['idle_rss_mib']:.1f} MiB")
for f in ("malformed", "junk", "spoofed"):
    if f + "_peak_rss_mib" in d:
        print(f"{f}: peak {d[f + '_peak_rss_mib']:.1f} MiB, after the quiet period {d['after_' + f + '_rss_mib']:.1f} MiB")
PY
