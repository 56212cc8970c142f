// Command testhost starts one plugin through plugins.New, prints the
// plugin's pid and waits to be killed: the test of orphaned plugins.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/opaque-edge/gatewayd/plugins"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: testhost plugin-path sha256")
		os.Exit(2)
	}
	h, err := plugins.New(context.Background(), []plugins.Config{{Name: "echo", Path: os.Args[1], SHA256: os.Args[2]}}, nil, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(h.Stats()[0].PID)
	select {}
}
