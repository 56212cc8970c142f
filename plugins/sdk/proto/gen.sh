#!/bin/sh
# Regenerates the Go code of gatewayd_plugin.proto into the directory $1
# (default: this one). protoc comes from Debian's protobuf-compiler; the two
# code generators are the Go tools pinned in go.mod, run through
# protoc-gen-go.sh and protoc-gen-go-grpc.sh so that nothing needs installing on PATH.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here}
cd "$here"
exec protoc -I . \
	--plugin=protoc-gen-go="$here/protoc-gen-go.sh" \
	--plugin=protoc-gen-go-grpc="$here/protoc-gen-go-grpc.sh" \
	--go_out="$out" --go_opt=paths=source_relative \
	--go-grpc_out="$out" --go-grpc_opt=paths=source_relative \
	gatewayd_plugin.proto
