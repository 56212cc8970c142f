// Package pcap writes captures of IEEE 802.15.4 frames in the classic
// libpcap file format with link type LINKTYPE_IEEE802_15_4_WITHFCS (195),
// which Wireshark and tshark dissect down to 6LoWPAN and CoAP.
//
// A radio.Link carries MPDUs without their FCS; the Writer appends a
// computed one so every record is a whole PSDU. A Writer is safe for
// concurrent use; Close flushes.
package pcap

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/opaque-edge/gatewayd/radio/mac"
)

// File format constants (the libpcap file format: a 24-octet global
// header, then per record a 16-octet header and the captured octets).
const (
	Magic         = 0xa1b2c3d4 // microsecond timestamps, written in host-independent little-endian
	VersionMajor  = 2
	VersionMinor  = 4
	LinkType      = 195 // LINKTYPE_IEEE802_15_4_WITHFCS
	SnapLen       = 65535
	headerLen     = 24
	recordHdrLen  = 16
	maxRecordData = mac.MaxPSDU
)

// ErrClosed is returned by writes after Close.
var ErrClosed = errors.New("pcap: writer closed")

// Writer writes a capture. The zero value is not usable; see NewWriter.
type Writer struct {
	mu     sync.Mutex
	bw     *bufio.Writer // guarded by mu
	closer io.Closer     // closed by Close if not nil; guarded by mu
	err    error         // first write error, sticky; guarded by mu
	closed bool          // guarded by mu
	rec    [recordHdrLen + maxRecordData + mac.FCSLen]byte
}

// NewWriter writes the file header to w and returns a Writer. If w is an
// io.Closer, Close closes it.
func NewWriter(w io.Writer) (*Writer, error) {
	pw := &Writer{bw: bufio.NewWriter(w)}
	if c, ok := w.(io.Closer); ok {
		pw.closer = c
	}
	var h [headerLen]byte
	binary.LittleEndian.PutUint32(h[0:], Magic)
	binary.LittleEndian.PutUint16(h[4:], VersionMajor)
	binary.LittleEndian.PutUint16(h[6:], VersionMinor)
	// thiszone and sigfigs stay 0: timestamps are UTC.
	binary.LittleEndian.PutUint32(h[16:], SnapLen)
	binary.LittleEndian.PutUint32(h[20:], LinkType)
	if _, err := pw.bw.Write(h[:]); err != nil {
		return nil, fmt.Errorf("pcap: header: %w", err)
	}
	return pw, nil
}

// Create creates (or truncates) the file at path and writes the header.
func Create(path string) (*Writer, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("pcap: %w", err)
	}
	w, err := NewWriter(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	return w, nil
}

// WriteMPDU records an MPDU without FCS, as a radio.Link carries it,
// appending its computed FCS.
func (w *Writer) WriteMPDU(ts time.Time, mpdu []byte) error {
	return w.write(ts, mpdu, true)
}

// WritePSDU records a PSDU that already ends with its FCS.
func (w *Writer) WritePSDU(ts time.Time, psdu []byte) error {
	return w.write(ts, psdu, false)
}

func (w *Writer) write(ts time.Time, b []byte, addFCS bool) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return ErrClosed
	}
	if w.err != nil {
		return w.err
	}
	n := len(b)
	if addFCS {
		n += mac.FCSLen
	}
	if n > maxRecordData {
		return fmt.Errorf("pcap: record of %d octets: %w", n, mac.ErrTooLong)
	}
	r := w.rec[:recordHdrLen+n]
	us := ts.UnixMicro()
	binary.LittleEndian.PutUint32(r[0:], uint32(us/1e6))
	binary.LittleEndian.PutUint32(r[4:], uint32(us%1e6))
	binary.LittleEndian.PutUint32(r[8:], uint32(n))
	binary.LittleEndian.PutUint32(r[12:], uint32(n))
	copy(r[recordHdrLen:], b)
	if addFCS {
		fcs := mac.FCS(b)
		r[recordHdrLen+len(b)] = byte(fcs)
		r[recordHdrLen+len(b)+1] = byte(fcs >> 8)
	}
	if _, err := w.bw.Write(r); err != nil {
		w.err = fmt.Errorf("pcap: write: %w", err)
		return w.err
	}
	return nil
}

// Flush writes buffered records to the underlying writer.
func (w *Writer) Flush() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return ErrClosed
	}
	return w.flush()
}

func (w *Writer) flush() error {
	if w.err != nil {
		return w.err
	}
	if err := w.bw.Flush(); err != nil {
		w.err = fmt.Errorf("pcap: flush: %w", err)
	}
	return w.err
}

// Close flushes and, if the underlying writer is an io.Closer, closes it.
// Close is idempotent; later calls return nil.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil
	}
	w.closed = true
	err := w.flush()
	if w.closer != nil {
		if cerr := w.closer.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("pcap: close: %w", cerr)
		}
	}
	return err
}
