#!/usr/bin/env bash
# Installs the real peers the tests run against, when they are missing:
# libcoap's clients and server, node-coap, tshark, mosquitto, curl,
# promtool, headless Chromium, and the packaging tools. Debian or Ubuntu, as root (apt);
# node-coap and ws (a WebSocket server for the coap+ws origin) come from
# npm into internal/testpeer/nodecoap/node_modules.
set -euo pipefail

need=()
command -v coap-client-notls >/dev/null || need+=(libcoap3-bin)
command -v tshark >/dev/null || need+=(tshark)
command -v curl >/dev/null || need+=(curl)
command -v mosquitto >/dev/null || need+=(mosquitto)
command -v mosquitto_sub >/dev/null || need+=(mosquitto-clients)
# The Debian package test (packaging/): lintian, and systemd for
# systemd-analyze and systemd-sysusers; systemd-socket-activate passes
# sockets to gatewayd in the socket activation test (cmd/gatewayd).
command -v lintian >/dev/null || need+=(lintian)
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v systemd-sysusers >/dev/null || need+=(systemd)
command -v systemd-socket-activate >/dev/null || need+=(systemd)
command -v protoc >/dev/null || need+=(protobuf-compiler)
# node-coap, the second CoAP implementation the tests use, runs on node.
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
# promtool lints the metrics (bridge). It comes with the Prometheus server:
# on a host running systemd, Debian's package enables and starts that
# server (TCP 9090, scraping itself), which no test uses or disturbs; in a
# container policy-rc.d usually keeps it from starting.
command -v promtool >/dev/null || need+=(prometheus)
# The operator console's browser test (cmd/gatewayd) loads the page in
# headless Chromium, driven over --remote-debugging-pipe.
command -v chromium >/dev/null || need+=(chromium)
# The version scheme's test makes commits in a scratch repository.
command -v git >/dev/null || need+=(git)

if [ ${#need[@]} -gt 0 ]; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "test-deps: missing ${need[*]}; run as root or install them" >&2
		exit 1
	fi
	echo "test-deps: installing ${need[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# node-coap (npm coap) and npm ws at the versions package-lock.json pins,
# installed afresh when one is missing or the lock file changed. --ignore-scripts:
# nothing from the registry runs at install time.
nodecoap="$(cd "$(dirname "$0")/../internal/testpeer/nodecoap" && pwd)"
if [ ! -f "$nodecoap/node_modules/coap/package.json" ] ||
	[ ! -f "$nodecoap/node_modules/ws/package.json" ] ||
	[ "$nodecoap/package-lock.json" -nt "$nodecoap/node_modules/.package-lock.json" ]; then
	echo "test-deps: installing node-coap and ws into $nodecoap/node_modules"
	(cd "$nodecoap" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
fi
