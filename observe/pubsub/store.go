package pubsub

import (
	"fmt"

	"github.com/fxamacker/cbor/v2"
	"github.com/opaque-edge/gatewayd/internal/filestore"
)

// record is one topic as stored in the state directory: its
// configuration (the draft's CBOR map, as the broker would send it) and
// its last publication, byte for byte.
type record struct {
	Version int    `cbor:"0,keyasint"`
	ID      string `cbor:"1,keyasint"`
	Config  []byte `cbor:"2,keyasint"`
	Full    bool   `cbor:"3,keyasint"`
	HasCF   bool   `cbor:"4,keyasint"`
	CF      uint16 `cbor:"5,keyasint"`
	Payload []byte `cbor:"6,keyasint"`
	Seq     uint32 `cbor:"7,keyasint"`
	// Creator is acl.Client.Key of who created the topic, for
	// max_topics_per_client across restarts. Files written before it
	// existed have none: their topics are charged to no one.
	Creator string `cbor:"8,keyasint,omitempty"`
}

const recordVersion = 1

// stateFiles names the state directory's files, one per topic
// (topic-<id>.cbor), each replaced atomically: a crash leaves the old
// record or the new one.
var stateFiles = filestore.Layout{Prefix: "topic-", Suffix: ".cbor", Component: "pubsub", Kind: "topic"}

// memStore keeps records in memory: for tests and benchmarks that measure
// the broker without a disk.
type memStore struct{}

func (memStore) Save(string, []byte) error           { return nil }
func (memStore) Remove(string) error                 { return nil }
func (memStore) Load() ([]filestore.Record, []error) { return nil, nil }

// recMode decodes a state file with the same limits as a request.
var recMode = func() cbor.DecMode {
	dm, err := cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       cbor.IndefLengthForbidden,
		MaxNestedLevels:   4,
		MaxArrayElements:  16,
		MaxMapPairs:       16,
		UTF8:              cbor.UTF8RejectInvalid,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
	}.DecMode()
	if err != nil {
		panic(err) // static options
	}
	return dm
}()

func encodeRecord(r *record) ([]byte, error) {
	b, err := encMode.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("pubsub: encode record: %w", err)
	}
	return b, nil
}

func decodeRecord(b []byte) (*record, error) {
	var r record
	if err := recMode.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("pubsub: decode record: %w", err)
	}
	if r.Version != recordVersion {
		return nil, fmt.Errorf("pubsub: record version %d, want %d", r.Version, recordVersion)
	}
	return &r, nil
}
