// Command gatewayctl is the operator and end-to-end client CLI of gatewayd:
// it sends CoAP requests directly or through a gatewayd proxy, protects them
// end to end with OSCORE (RFC 8613), verifies COSE_Sign1 representations,
// and generates the keys and security contexts for both.
//
// Usage:
//
//	gatewayctl get|put|post|delete|observe [flags] URI
//	gatewayctl group [flags] URI
//	gatewayctl keys ed25519|oscore [flags]
//	gatewayctl status [-admin host:port] [-json]
//	gatewayctl -version
//
// Exit codes: 0 success, 1 CoAP error response, 2 usage or local file error,
// 3 verification failure, 4 network error or timeout. See README.md.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
