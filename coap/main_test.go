package coap

import (
	"os"
	"testing"

	"github.com/opaque-edge/gatewayd/internal/testutil"
)

// Whoever starts a goroutine stops it: after the tests, none of the
// module's is left running.
func TestMain(m *testing.M) { os.Exit(testutil.VerifyNoLeaks(m)) }
