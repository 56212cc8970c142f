package oscore

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"fmt"
	"sync"

	"github.com/fxamacker/cbor/v2"
	"github.com/pion/dtls/v3/pkg/crypto/ccm"
)

// Algorithm parameters of AES-CCM-16-64-128 (RFC 8152 §10.2), the only AEAD
// this package implements.
const (
	AlgAESCCM1664128 = 10 // COSE algorithm identifier

	keyLen   = 16
	nonceLen = 13
	tagLen   = 8
	// maxIDLen is the longest Sender or Recipient ID: the nonce length
	// minus 6 (§3.3, §5.2).
	maxIDLen = nonceLen - 6
	// maxPlaintext is what CCM with a 2-byte length field can encrypt
	// (15 - nonceLen = 2).
	maxPlaintext = 1<<16 - 1
)

// MaxSeq is the largest Sender Sequence Number (§7.2.1, §12.6: 2^40 - 1,
// the Partial IV being at most 5 bytes).
const MaxSeq = 1<<40 - 1

// MinMasterSecret is the shortest Master Secret NewContext accepts. RFC 8613
// §12.3 only asks for "a good amount of randomness"; 16 bytes matches the
// AES-128 key the derivation feeds.
const MinMasterSecret = 16

// DefaultReplayWindow is the replay window size of §3.2.2 (the IPsec/DTLS
// anti-replay window of 32).
const DefaultReplayWindow = 32

// DefaultSeqStoreInterval is K of Appendix B.1.1 when a SeqStore is set and
// Config.SeqStoreInterval is zero.
const DefaultSeqStoreInterval = 100

// Params are the input parameters of a security context (§3.2). The AEAD
// and HKDF are fixed to AES-CCM-16-64-128 and HKDF SHA-256.
type Params struct {
	MasterSecret []byte
	MasterSalt   []byte // empty is the default (§3.1)
	// IDContext nil means no ID Context (nil in the §3.2.1 info); a
	// non-nil empty slice is an empty ID Context, which derives different
	// keys.
	IDContext   []byte
	SenderID    []byte // at most 7 bytes; empty is a valid ID (§3.3)
	RecipientID []byte // at most 7 bytes
}

// Validate checks the parameters against §3.3.
func (p Params) Validate() error {
	switch {
	case len(p.MasterSecret) < MinMasterSecret:
		return fmt.Errorf("%w: master secret of %d bytes, need at least %d", ErrConfig, len(p.MasterSecret), MinMasterSecret)
	case len(p.SenderID) > maxIDLen:
		return fmt.Errorf("%w: sender ID of %d bytes, at most %d", ErrConfig, len(p.SenderID), maxIDLen)
	case len(p.RecipientID) > maxIDLen:
		return fmt.Errorf("%w: recipient ID of %d bytes, at most %d", ErrConfig, len(p.RecipientID), maxIDLen)
	case bytes.Equal(p.SenderID, p.RecipientID):
		// Equal IDs derive equal sender and recipient keys and equal
		// nonces in both directions: AEAD nonce reuse (§3.3, D.4).
		return fmt.Errorf("%w: sender and recipient ID are equal (%x)", ErrConfig, p.SenderID)
	}
	return nil
}

// SeqStore persists the Sender Sequence Number so that a restarted endpoint
// never reuses one (§7.5 item 1, Appendix B.1.1).
//
// The stored value is a high-water mark: no sequence number at or above it
// has been used. The context stores seq+K before it uses seq whenever seq
// reaches the stored mark, so StoreSeq runs once every K messages, and on
// restart the context starts at the loaded mark plus SeqStoreMargin. In the
// terms of Appendix B.1.1 the mark is SSN1 + K.
//
// StoreSeq is called with the context's lock held and must return only once
// the value is durable; an error fails the protect call and the number is not
// used.
type SeqStore interface {
	// LoadSeq returns the stored mark, or ok false if nothing was stored.
	LoadSeq() (mark uint64, ok bool, err error)
	// StoreSeq durably records a new mark.
	StoreSeq(mark uint64) error
}

// Config configures a Context.
type Config struct {
	Params
	// SendKIDContext puts the ID Context into the 'kid context' of
	// requests (§5.1), for servers that select contexts by it.
	SendKIDContext bool
	// ReplayWindow is the size of the sliding replay window for requests
	// (§7.4); zero means DefaultReplayWindow.
	ReplayWindow int
	// SeqStore, if set, persists the Sender Sequence Number.
	SeqStore SeqStore
	// SeqStoreInterval is K: how many sequence numbers one store covers;
	// zero means DefaultSeqStoreInterval.
	SeqStoreInterval uint64
	// SeqStoreMargin is F of Appendix B.1.1, added to the loaded mark on
	// start. StoreSeq is synchronous, so zero is safe unless the store can
	// report success for a write it later loses.
	SeqStoreMargin uint64
}

// Context is an OSCORE security context (§3.1): the common context and one
// sender and one recipient context. It is safe for concurrent use.
type Context struct {
	senderID    []byte
	recipientID []byte
	idContext   []byte // nil if absent
	sendKIDCtx  bool

	senderKey    []byte
	recipientKey []byte
	commonIV     [nonceLen]byte
	sealer       cipher.AEAD // under senderKey
	opener       cipher.AEAD // under recipientKey

	store    SeqStore
	interval uint64

	mu sync.Mutex
	// guarded by mu:
	seq    uint64 // next Sender Sequence Number (§3.2.2)
	mark   uint64 // store high-water mark: seq may be used only while seq < mark (with a store)
	window window // replay window of the recipient context (§7.4)
}

// NewContext derives a security context (§3.2). With a SeqStore it loads the
// stored mark and starts after it.
func NewContext(cfg Config) (*Context, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.SendKIDContext && cfg.IDContext == nil {
		return nil, fmt.Errorf("%w: kid context requested without an ID context", ErrConfig)
	}
	if cfg.SendKIDContext && len(cfg.IDContext) > 255 {
		// §6.1: the 'kid context' length is one byte.
		return nil, fmt.Errorf("%w: ID context of %d bytes cannot be sent as kid context (at most 255)", ErrConfig, len(cfg.IDContext))
	}
	size := cfg.ReplayWindow
	if size == 0 {
		size = DefaultReplayWindow
	}
	if size < 1 || size > maxWindow {
		return nil, fmt.Errorf("%w: replay window of %d, want 1 to %d", ErrConfig, size, maxWindow)
	}
	c := &Context{
		senderID:    bytes.Clone(cfg.SenderID),
		recipientID: bytes.Clone(cfg.RecipientID),
		idContext:   bytes.Clone(cfg.IDContext),
		sendKIDCtx:  cfg.SendKIDContext,
		store:       cfg.SeqStore,
		window:      newWindow(size),
	}
	var err error
	if c.senderKey, err = derive(cfg.Params, cfg.SenderID, "Key", keyLen); err != nil {
		return nil, err
	}
	if c.recipientKey, err = derive(cfg.Params, cfg.RecipientID, "Key", keyLen); err != nil {
		return nil, err
	}
	iv, err := derive(cfg.Params, []byte{}, "IV", nonceLen)
	if err != nil {
		return nil, err
	}
	copy(c.commonIV[:], iv)
	if c.sealer, err = newAEAD(c.senderKey); err != nil {
		return nil, err
	}
	if c.opener, err = newAEAD(c.recipientKey); err != nil {
		return nil, err
	}
	if c.store != nil {
		c.interval = cfg.SeqStoreInterval
		if c.interval == 0 {
			c.interval = DefaultSeqStoreInterval
		}
		mark, ok, err := c.store.LoadSeq()
		if err != nil {
			return nil, fmt.Errorf("%w: load: %w", ErrSeqStore, err)
		}
		if ok {
			if mark > MaxSeq+1 || cfg.SeqStoreMargin > MaxSeq+1-mark {
				return nil, fmt.Errorf("%w: stored mark %d", ErrSeqExhausted, mark)
			}
			c.seq = mark + cfg.SeqStoreMargin
			c.mark = mark // below seq: the first send stores a new mark
		}
	}
	return c, nil
}

func newAEAD(key []byte) (cipher.AEAD, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("oscore: %w", err)
	}
	a, err := ccm.NewCCM(b, tagLen, nonceLen)
	if err != nil {
		return nil, fmt.Errorf("oscore: %w", err)
	}
	return a, nil
}

// info builds the §3.2.1 HKDF info: [id, id_context, alg_aead, type, L].
func info(id, idContext []byte, typ string, l int) ([]byte, error) {
	var idc any // CBOR nil when there is no ID Context
	if idContext != nil {
		idc = idContext
	}
	b, err := cbor.Marshal([]any{id, idc, AlgAESCCM1664128, typ, l})
	if err != nil {
		return nil, fmt.Errorf("oscore: encode info: %w", err)
	}
	return b, nil
}

// derive computes one of Sender Key, Recipient Key or Common IV (§3.2.1).
func derive(p Params, id []byte, typ string, l int) ([]byte, error) {
	if id == nil {
		id = []byte{} // a bstr, never CBOR nil
	}
	in, err := info(id, p.IDContext, typ, l)
	if err != nil {
		return nil, err
	}
	k, err := hkdf.Key(sha256.New, p.MasterSecret, p.MasterSalt, string(in), l)
	if err != nil {
		return nil, fmt.Errorf("oscore: hkdf: %w", err)
	}
	return k, nil
}

// nonce builds the AEAD nonce from the ID of the endpoint that generated
// the Partial IV and that Partial IV (§5.2, Figure 8).
func (c *Context) nonce(idPIV, piv []byte) [nonceLen]byte {
	var n [nonceLen]byte
	n[0] = byte(len(idPIV))
	copy(n[1+maxIDLen-len(idPIV):1+maxIDLen], idPIV)
	copy(n[nonceLen-len(piv):], piv)
	for i := range n {
		n[i] ^= c.commonIV[i]
	}
	return n
}

// nextSeq takes the next Sender Sequence Number, storing a new mark first
// when the old one is reached (§7.2: read and increment atomically).
func (c *Context) nextSeq() (uint64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.seq
	if s > MaxSeq {
		return 0, ErrSeqExhausted
	}
	if c.store != nil && s >= c.mark {
		mark := min(s+c.interval, MaxSeq+1)
		if err := c.store.StoreSeq(mark); err != nil {
			return 0, fmt.Errorf("%w: %w", ErrSeqStore, err)
		}
		c.mark = mark
	}
	c.seq = s + 1
	return s, nil
}

// SenderID returns a copy of the Sender ID.
func (c *Context) SenderID() []byte { return bytes.Clone(c.senderID) }

// RecipientID returns a copy of the Recipient ID.
func (c *Context) RecipientID() []byte { return bytes.Clone(c.recipientID) }

// IDContext returns a copy of the ID Context, nil if there is none.
func (c *Context) IDContext() []byte { return bytes.Clone(c.idContext) }

// Seq returns the next Sender Sequence Number the context will use.
func (c *Context) Seq() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.seq
}

// encodePIV returns the Partial IV of a sequence number: big-endian without
// leading zero bytes, 0 as 0x00 (§5).
func encodePIV(s uint64) []byte {
	n := 1
	for v := s >> 8; v > 0; v >>= 8 {
		n++
	}
	b := make([]byte, n)
	for i := n - 1; i >= 0; i-- {
		b[i] = byte(s)
		s >>= 8
	}
	return b
}

// decodePIV is the inverse of encodePIV for at most 5 bytes.
func decodePIV(b []byte) uint64 {
	var v uint64
	for _, c := range b {
		v = v<<8 | uint64(c)
	}
	return v
}
