#!/bin/sh
# Run by protoc (see gen.sh): the protoc-gen-go that go.mod pins.
exec go tool protoc-gen-go "$@"
