package wire

import (
	"errors"
	"testing"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/plugins/sdk/blockwise"
	pb "github.com/opaque-edge/gatewayd/plugins/sdk/proto"
	"github.com/opaque-edge/gatewayd/radio"
)

func TestCoAPErrorKeepsCodeAndMaxAgeAcrossTheWire(t *testing.T) {
	in := &coap.Error{Code: coap.ServiceUnavailable, Diagnostic: "busy", MaxAge: 7}
	var ce *coap.Error
	if !errors.As(Error(Failure(in)), &ce) || ce.Code != in.Code || ce.MaxAge != 7 || ce.Diagnostic != "busy" {
		t.Fatalf("got %#v", ce)
	}
}

func TestFailureWithRequestCodeIsRejected(t *testing.T) {
	if err := Error(&pb.Failure{Code: uint32(coap.GET)}); !errors.Is(err, ErrBadMessage) {
		t.Fatalf("err = %v", err)
	}
}

func TestRadioErrorsKeepTheirIdentity(t *testing.T) {
	for _, e := range []error{radio.ErrNoAck, radio.ErrChannelBusy, radio.ErrDown, radio.ErrTooLong} {
		if got := LinkError(RadioError(e)); !errors.Is(got, e) {
			t.Errorf("%v came back as %v", e, got)
		}
	}
	if LinkError(RadioError(nil)) != nil {
		t.Error("nil is not nil")
	}
}

func TestDecodeRefusesGarbage(t *testing.T) {
	for _, b := range [][]byte{nil, {0xff}, {0x4f, 1, 0, 0}, make([]byte, MaxMessage+1)} {
		if _, err := Decode(b); !errors.Is(err, ErrBadMessage) {
			t.Errorf("Decode(%d bytes) err = %v", len(b), err)
		}
	}
}

func TestTooLargeKeepsItsSizesAcrossTheWire(t *testing.T) {
	in := &coap.Error{Code: coap.RequestEntityTooLarge, MaxAge: -1, Diagnostic: "too big",
		Err: &blockwise.TooLargeError{Size: 10240, Max: 4096, Request: true}}
	err := Error(Failure(in))
	var ce *coap.Error
	var tl *blockwise.TooLargeError
	if !errors.As(err, &ce) || ce.Code != coap.RequestEntityTooLarge || ce.Diagnostic != "too big" {
		t.Fatalf("got %v", err)
	}
	if !errors.As(err, &tl) || tl.Size != 10240 || tl.Max != 4096 || !tl.Request || !errors.Is(err, blockwise.ErrTooLarge) {
		t.Fatalf("TooLargeError lost: %v", err)
	}
	// Without a code it is still a TooLargeError, and a plain failure is
	// not one.
	if err := Error(Failure(&blockwise.TooLargeError{Size: 1 << 63 / 2, Max: 1})); !errors.Is(err, blockwise.ErrTooLarge) {
		t.Fatalf("code-less: %v", err)
	}
	if err := Error(Failure(errors.New("x"))); errors.Is(err, blockwise.ErrTooLarge) {
		t.Fatal("a plain failure became too large")
	}
}
