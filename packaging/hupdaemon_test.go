package packaging

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"testing"
)

// hupDaemonEnv makes the test binary stand in for gatewayd in the reload
// test: it waits for SIGHUP and exits 0 on it. signal.Notify takes the
// signal even when the test runs with SIGHUP ignored (under nohup, say),
// which a plain sleep would inherit and survive the signal.
const hupDaemonEnv = "GATEWAYD_TEST_HUP_DAEMON"

func init() {
	if os.Getenv(hupDaemonEnv) != "1" {
		return
	}
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGHUP)
	fmt.Println("ready")
	<-c
	os.Exit(0)
}

// startHUPDaemon starts the stand-in and returns once it takes SIGHUP.
func startHUPDaemon(t *testing.T) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), hupDaemonEnv+"=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || line != "ready\n" {
		cmd.Process.Kill()
		t.Fatalf("the SIGHUP stand-in said %q, %v", line, err)
	}
	return cmd
}
