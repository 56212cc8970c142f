package rd

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/opaque-edge/gatewayd/internal/filestore"
)

// record is one registration as stored in the state directory.
type record struct {
	Version int       `json:"version"`
	ID      string    `json:"id"`
	EP      string    `json:"ep"`
	D       string    `json:"d,omitempty"`
	Base    string    `json:"base,omitempty"` // explicit base; "" when taken from From
	From    string    `json:"from"`           // address and port it registered or last updated from
	Secure  bool      `json:"secure,omitempty"`
	Owner   string    `json:"owner"`
	LT      uint32    `json:"lt"`
	Expires time.Time `json:"expires"`
	Updated time.Time `json:"updated"`
	Simple  bool      `json:"simple,omitempty"`
	Proxy   bool      `json:"proxy,omitempty"`
	Attrs   []Param   `json:"attrs,omitempty"`
	Links   string    `json:"links"` // the link-format document as registered
}

const recordVersion = 1

// stateFiles names the state directory's files, one per registration
// (reg-<id>.json), each replaced atomically: a crash leaves the old
// record or the new one.
var stateFiles = filestore.Layout{Prefix: "reg-", Suffix: ".json", Component: "rd", Kind: "registration"}

func encodeRecord(r *record) ([]byte, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("rd: encode record: %w", err)
	}
	return b, nil
}

func decodeRecord(b []byte) (*record, error) {
	var r record
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return nil, fmt.Errorf("rd: decode record: %w", err)
	}
	if r.Version != recordVersion {
		return nil, fmt.Errorf("rd: record version %d, want %d", r.Version, recordVersion)
	}
	return &r, nil
}
