package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"runtime/debug"
)

// Exit codes, the contract scripts rely on (README.md).
const (
	exitOK       = 0 // success: a 2.xx response, verified if asked
	exitResponse = 1 // the server (or a proxy) answered with a 4.xx or 5.xx
	exitUsage    = 2 // bad command line, or a local file that cannot be used
	exitVerify   = 3 // OSCORE or COSE verification failed
	exitNetwork  = 4 // no answer, reset, unreachable, timeout
)

// exitError carries the exit code an error maps to.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func usageErr(format string, args ...any) error {
	return &exitError{exitUsage, fmt.Errorf(format, args...)}
}

func withCode(code int, err error) error {
	if err == nil {
		return nil
	}
	return &exitError{code, err}
}

const topUsage = `gatewayctl — operator and end-to-end client for gatewayd

Usage:
  gatewayctl get     [flags] URI    fetch a resource
  gatewayctl put     [flags] URI    replace a resource with -e
  gatewayctl post    [flags] URI    send -e to a resource
  gatewayctl delete  [flags] URI    delete a resource
  gatewayctl observe [flags] URI    fetch and follow a resource (RFC 7641)
  gatewayctl group   [flags] URI    one request to a group of nodes through gatewayd,
                                    every node's response (see "gatewayctl group -h")
  gatewayctl keys ed25519 -out PREFIX
                                    signing key pair: PREFIX.key (0600), PREFIX.pub
  gatewayctl keys oscore -out FILE [-peer-out FILE]
                                    a matching pair of OSCORE contexts (0600)
  gatewayctl status [-admin host:port] [-token-file file] [-json]
                                    gatewayd's state from its admin endpoint:
                                    version, uptime, listeners, routes,
                                    radios and plugins with their state
  gatewayctl -version               print the version

Request flags (see "gatewayctl get -h"):
  -proxy URI      send through this CoAP proxy (Proxy-Uri), e.g. coap://127.0.0.1:5683
  -oscore FILE    protect the request with OSCORE and verify the response
  -verify FILE    verify a COSE_Sign1 representation with this public key
  -e PAYLOAD      request payload;  -cf N  its Content-Format
                  (with -verify: the Content-Format the representation must declare)

Exit codes:
  0  success
  1  CoAP error response (4.xx, 5.xx): code and diagnostic on stderr
  2  usage error, or a key or context file that cannot be read or written
  3  verification failure (OSCORE, COSE signature, resource, freshness)
  4  network error or timeout
`

// run is gatewayctl without the process: it parses args, does the work and
// returns the exit code. A cancelled ctx ends an observation cleanly.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, topUsage)
		return exitUsage
	}
	var err error
	switch cmd := args[0]; cmd {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, topUsage)
		return exitOK
	case "-version", "--version", "version":
		fmt.Fprintln(stdout, "gatewayctl", buildVersion())
		return exitOK
	case "get", "put", "post", "delete", "observe":
		err = runRequest(ctx, cmd, args[1:], stdout, stderr)
	case "group":
		err = runGroup(ctx, args[1:], stdout, stderr)
	case "keys":
		err = runKeys(args[1:], stdout, stderr)
	case "status":
		err = runStatus(ctx, args[1:], stdout, stderr)
	default:
		fmt.Fprintf(stderr, "gatewayctl: unknown command %q\n\n%s", cmd, topUsage)
		return exitUsage
	}
	if err == nil {
		return exitOK
	}
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	code := exitUsage
	var ee *exitError
	if errors.As(err, &ee) {
		code = ee.code
	}
	if !errors.Is(err, errReported) {
		fmt.Fprintln(stderr, "gatewayctl:", err)
	}
	return code
}

// version is set at build time with -ldflags "-X main.version=...".
var version = ""

func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "devel"
}

// errReported marks an error whose message was already printed (flag
// parsing prints its own).
var errReported = errors.New("gatewayctl: reported")

// parseFlags parses a subcommand's flags, before and after the positional
// arguments ("get URI -v" works too); errors are usage errors, -h is not an
// error. "--" ends the flags.
func parseFlags(fs *flag.FlagSet, args []string) error {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return err
			}
			return &exitError{exitUsage, fmt.Errorf("%w: %w", errReported, err)}
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		if len(args) > len(rest) && args[len(args)-len(rest)-1] == "--" {
			pos = append(pos, rest...)
			break
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
	// Parse once more with only the positional arguments left, so that
	// fs.Args reports them.
	return fs.Parse(append([]string{"--"}, pos...))
}
