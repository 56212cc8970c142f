package mqtt

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
)

func TestPollObservePassesOnlyChanges(t *testing.T) {
	var mu sync.Mutex
	n := 0
	do := func(ctx context.Context, req *coap.Message, _ bool) (*coap.Message, error) {
		mu.Lock()
		defer mu.Unlock()
		n++
		if pu, _ := req.Options.Get(coap.ProxyURI); string(pu) != "coap://node/x" || req.Code != coap.GET {
			t.Errorf("request %v %q", req.Code, pu)
		}
		// Changes every third poll.
		return &coap.Message{Code: coap.Content, Payload: []byte{byte(n / 3)}}, nil
	}
	var got [][]byte
	var gmu sync.Mutex
	cancel, err := PollObserve(do, 5*time.Millisecond, 5*time.Millisecond)(t.Context(), "coap://node/x", func(m *coap.Message) {
		gmu.Lock()
		got = append(got, m.Payload)
		gmu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "three representations", 5*time.Second, func() bool {
		gmu.Lock()
		defer gmu.Unlock()
		return len(got) >= 3
	})
	cancel()
	gmu.Lock()
	defer gmu.Unlock()
	for i := 1; i < len(got); i++ {
		if got[i][0] == got[i-1][0] {
			t.Errorf("representation %d repeated: %v", i, got)
		}
	}
}
