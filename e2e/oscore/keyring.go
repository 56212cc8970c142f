package oscore

import (
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/opaque-edge/gatewayd/coap"
)

// Keyring is a server's set of security contexts, chosen per request by
// 'kid' and 'kid context' (§8.2 step 2). The zero value is empty and ready.
// It is safe for concurrent use.
type Keyring struct {
	mu    sync.RWMutex
	byKID map[string][]*Context // guarded by mu; key: Recipient ID
}

// Add puts c into the ring. Contexts may share a Recipient ID (§3.3); a
// request is then tried against each of them in the order they were added.
func (k *Keyring) Add(c *Context) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.byKID == nil {
		k.byKID = make(map[string][]*Context)
	}
	id := string(c.recipientID)
	if !slices.Contains(k.byKID[id], c) {
		k.byKID[id] = append(k.byKID[id], c)
	}
}

// Remove takes c out of the ring.
func (k *Keyring) Remove(c *Context) {
	k.mu.Lock()
	defer k.mu.Unlock()
	id := string(c.recipientID)
	l := slices.DeleteFunc(slices.Clone(k.byKID[id]), func(x *Context) bool { return x == c })
	if len(l) == 0 {
		delete(k.byKID, id)
	} else {
		k.byKID[id] = l
	}
}

// UnprotectRequest verifies a request with the context its 'kid' and 'kid
// context' select (§8.2). With several candidates the first that decrypts
// wins; ErrUnknownKID means none matched.
func (k *Keyring) UnprotectRequest(m *coap.Message) (*coap.Message, *Exchange, error) {
	ov, err := oscoreOption(m)
	if err != nil {
		return nil, nil, err
	}
	if !ov.HasKID {
		return nil, nil, fmt.Errorf("%w: request without kid", ErrDecode)
	}
	k.mu.RLock()
	cands := k.byKID[string(ov.KID)] // never modified in place
	k.mu.RUnlock()
	err = fmt.Errorf("%w: kid %x", ErrUnknownKID, ov.KID)
	for _, c := range cands {
		if !c.matches(ov) {
			continue
		}
		out, ex, cerr := c.unprotectRequest(m, ov)
		switch {
		case cerr == nil:
			return out, ex, nil
		case errors.Is(cerr, ErrReplay):
			// The replay check runs before decryption, so it may come
			// from a context the request was not for: try the others,
			// and report the replay if none decrypts.
			err = cerr
		case errors.Is(cerr, ErrDecrypt):
			if !errors.Is(err, ErrReplay) {
				err = cerr
			}
		default:
			return nil, nil, cerr
		}
	}
	return nil, nil, err
}
