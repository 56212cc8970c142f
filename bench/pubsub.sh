#!/usr/bin/env bash
# Pub-sub through gatewayd's broker: one topic, 1,000 subscribers (GET
# with Observe on its topic data, on 20 sockets), and closed-loop
# publishers (PUT to the topic data), all in a process of their own
# (bench/fanout pubsub). Every acknowledged publication is fsynced to
# state_dir first; state_dir is a fresh directory on /var/tmp (a disk, not
# tmpfs, so the fsyncs are real; the script prints its file system).
# min_publish_interval is "0s": no 4.29s, the broker's own limit.
#
# Measured: publications acknowledged per second, notifications delivered
# per second to the subscribers, publish-to-subscriber latency, and
# gatewayd's CPU time and VmRSS from /proc.
# The result (JSON) goes to bench/results/pubsub.json.
#
#   bench/pubsub.sh [subscribers] [publishers] [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
subs=${1:-1000}
pubs=${2:-4}
secs=${3:-10}
source bench/common.sh
state=$(mktemp -d -p "${STATE_TMP:-/var/tmp}" gatewayd-pubsub-bench.XXXXXX)
also_remove=$state
go build -o "$bin/fanout" ./bench/fanout

gw=127.0.0.1:5897
{ fanout_sections $gw "$subs"; cat <<TOML; } >"$bin/gw.toml"
[pubsub]
enabled = true
state_dir = "$state"
min_publish_interval = "0s"
[metrics]
listen = ""
TOML

"$bin/gatewayd" -config "$bin/gw.toml" -log-level warn &
gwpid=$!
sleep 1

echo "== $subs subscribers, $pubs publishers, ${secs}s; state_dir on $(df --output=fstype "$state" | tail -1); $(nproc) cores, $(go version | cut -d' ' -f3), $(date -u +%FT%TZ)"
timeout $((secs + 60)) "$bin/fanout" pubsub -gw $gw -pid $gwpid -subs "$subs" -pubs "$pubs" -d "${secs}s" | tee "$out/pubsub.json"
python3 - "$out/pubsub.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"publications: {r['publications_per_s']:.0f}/s acknowledged (ack p50 {r['publish_ack_p50_ms']:.2f} ms, p99 {r['publish_ack_p99_ms']:.2f} ms; "
      f"{r['rejected_429']} 4.29, {r['failed']} failed)")
print(f"notifications: {r['notifications_per_s']:.0f}/s delivered to {r['subscribers']} subscribers; each saw "
      f"{100*r['seen_fraction']:.0f}% of the publications (the hub's latest-wins slot skips the rest)")
print(f"publish to subscriber: p50 {r['publish_to_subscriber_p50_ms']:.1f} ms, p99 {r['publish_to_subscriber_p99_ms']:.1f} ms, "
      f"max {r['publish_to_subscriber_max_ms']:.1f} ms")
print(f"gatewayd: {100*r['gw_cpu_s_in_window']/r['seconds']:.0f}% of one core while publishing; VmRSS "
      f"{r['gw_before']['rss_kib']/1024:.1f} -> {r['gw_subscribed']['rss_kib']/1024:.1f} (subscribed) -> {r['gw_after']['rss_kib']/1024:.1f} MiB")
PY
