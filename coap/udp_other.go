//go:build !linux

package coap

import "errors"

// NewBatch is recvmmsg(2) on Linux; elsewhere the endpoint reads one
// datagram at a time.
func (u *UDP) NewBatch(int) (Batch, error) {
	return nil, errors.New("coap: batch reads need Linux")
}
