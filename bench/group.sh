#!/bin/sh
# One group GET against 50 unicast GETs through gatewayd, on a simulated
# radio: time to the first and last response, responses lost, frames on
# air. Writes bench/results/group.json and the plot docs/bench-group.svg.
#
#   bench/group.sh [nodes] [rounds] [leisure]     (defaults: 50 5 5s)
set -eu
cd "$(dirname "$0")/.."
nodes=${1:-50}
rounds=${2:-5}
leisure=${3:-5s}
mkdir -p bench/results
echo "nproc $(nproc), $(go version), $(date -u +%Y-%m-%d)" >&2
go run ./bench/groupbench -nodes "$nodes" -rounds "$rounds" -leisure "$leisure" \
	-json bench/results/group.json -svg docs/bench-group.svg
