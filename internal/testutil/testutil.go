// Package testutil holds what the tests of several packages need alike:
// waiting for a condition with a generous deadline (Eventually),
// checking that a package's tests leave no goroutine of the module's
// running (VerifyNoLeaks), and copying and comparing directories of
// files (CopyDir, SameFiles). Only tests import it.
package testutil

import (
	"bytes"
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// Deadline is how long Eventually waits: generous, since tests run on a
// busy machine; a condition that holds comes far sooner.
const Deadline = 10 * time.Second

// Eventually polls cond until it holds, failing t with what after
// Deadline. It waits on an event the code under test makes visible (a
// counter reaching a value), never on a guess at how long that takes.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	EventuallyWithin(t, Deadline, what, cond)
}

// EventuallyWithin is Eventually with a deadline of d.
func EventuallyWithin(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	pause := 100 * time.Microsecond
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s", d, what)
		}
		time.Sleep(pause)
		pause = min(2*pause, 10*time.Millisecond)
	}
}

// module is the import path prefix of the module's own code.
const module = "github.com/opaque-edge/gatewayd/"

// VerifyNoLeaks runs the tests of m and then, if they passed, waits up to
// Deadline for every goroutine running the module's code to end: whoever
// starts a goroutine stops it. A goroutine left over fails the run, with
// its stack. Call it from TestMain: os.Exit(testutil.VerifyNoLeaks(m)).
func VerifyNoLeaks(m *testing.M) int {
	code := m.Run()
	if code != 0 {
		return code
	}
	var left []string
	deadline := time.Now().Add(Deadline)
	for {
		left = leftOver()
		if len(left) == 0 {
			return 0
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	fmt.Fprintf(os.Stderr, "testutil: %d goroutines of the module's code outlived the tests:\n\n%s\n", len(left), strings.Join(left, "\n\n"))
	return 1
}

// leftOver returns the stacks of the goroutines, this one aside, that run
// the module's code, testutil's own aside.
func leftOver() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var out []string
	for i, g := range bytes.Split(buf, []byte("\n\n")) {
		if i == 0 {
			continue // this goroutine
		}
		s := string(g)
		if strings.Contains(strings.ReplaceAll(s, module+"internal/testutil.", ""), module) {
			out = append(out, s)
		}
	}
	return out
}
