# Sourced by the bench scripts, from the repository's root: the results
# folder ($out), a scratch folder for binaries ($bin) that goes on exit
# with every background job and whatever $also_remove names, and gatewayd
# built into it.
out=bench/results
mkdir -p "$out"
bin=$(mktemp -d)
also_remove=""
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$bin" $also_remove' EXIT
CGO_ENABLED=0 go build -trimpath -o "$bin/gatewayd" ./cmd/gatewayd

# open_idle addr n [coapbench idle flags]: coapbench (built into $bin by
# the script) opens n TCP connections to addr and keeps them idle, in the
# background as $idlepid; returns once all are open.
open_idle() {
	local addr=$1 n=$2
	shift 2
	"$bin/coapbench" idle -addr "$addr" -n "$n" "$@" >"$bin/idle.out" &
	idlepid=$!
	until grep -q ready "$bin/idle.out" 2>/dev/null; do
		kill -0 $idlepid 2>/dev/null || { echo "idle client failed"; exit 1; }
		sleep 0.5
	done
}

# fanout_sections gw n: the [proxy] and [observe] sections of a fan-out
# benchmark, gatewayd on gw with room for n observers from 127.0.0.0/8.
fanout_sections() {
	cat <<TOML
[proxy]
listen = ["udp://$1"]
allow = ["127.0.0.0/8"]
clients = ["127.0.0.0/8"]
timeout = "3s"
[observe]
max_observers = $(($2 * 2))
max_per_client = $(($2 * 2))
TOML
}
