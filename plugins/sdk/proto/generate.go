// Package pluginpb is the generated gRPC code of gatewayd_plugin.proto, the
// wire contract between gatewayd and its plugins. Plugin authors use package
// sdk, not this one.
package pluginpb

//go:generate ./gen.sh
