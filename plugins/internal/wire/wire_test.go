package wire

import (
	"errors"
	"testing"

	"github.com/opaque-edge/gatewayd/coap"
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
