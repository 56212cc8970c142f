#!/bin/sh
# Run by protoc (see gen.sh): the protoc-gen-go-grpc that go.mod pins.
exec go tool protoc-gen-go-grpc "$@"
