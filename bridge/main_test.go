package bridge

import (
	"os"
	"testing"

	"github.com/opaque-edge/gatewayd/internal/testutil"
)

// Whoever starts a goroutine stops it: after the tests, none of the
// module's is left running.
// A child started with inheritEnv is a socket-activated proxy, not tests.
func TestMain(m *testing.M) {
	if os.Getenv(inheritEnv) != "" {
		os.Exit(inheritedProxy())
	}
	os.Exit(testutil.VerifyNoLeaks(m))
}
