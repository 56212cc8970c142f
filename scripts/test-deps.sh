#!/usr/bin/env bash
# Installs the real peers the tests run against, when they are missing:
# libcoap's clients and server, tshark. Debian or Ubuntu, as root.
set -euo pipefail

need=()
command -v coap-client-notls >/dev/null || need+=(libcoap3-bin)
command -v tshark >/dev/null || need+=(tshark)
command -v curl >/dev/null || need+=(curl)
command -v mosquitto >/dev/null || need+=(mosquitto)
command -v mosquitto_sub >/dev/null || need+=(mosquitto-clients)
# The Debian package test (packaging/): lintian, and systemd for
# systemd-analyze and systemd-sysusers.
command -v lintian >/dev/null || need+=(lintian)
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v systemd-sysusers >/dev/null || need+=(systemd)
command -v protoc >/dev/null || need+=(protobuf-compiler)

if [ ${#need[@]} -eq 0 ]; then
	exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
	echo "test-deps: missing ${need[*]}; run as root or install them" >&2
	exit 1
fi
echo "test-deps: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
