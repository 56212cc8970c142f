package pcap

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/radio/mac"
)

// A data frame 0x0002 -> 0x0001 in PAN 0xabcd carrying a CoAP GET in
// IPHC/NHC-UDP, as the gateway sends it.
var getFrame, _ = hex.DecodeString("6188" + "01" + "cdab" + "0100" + "0200" + "7e77f0163316330000" + "4401a1b2c3d4e5f6b4746573740a68756d6964697479")

func TestFileFormatBytes(t *testing.T) {
	var buf bytes.Buffer
	w, err := NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	ts := time.Unix(1700000000, 123456789)
	if err := w.WriteMPDU(ts, getFrame); err != nil {
		t.Fatal(err)
	}
	if err := w.WritePSDU(ts.Add(time.Second), mac.AppendFCS([]byte{0x02, 0x00, 0x6a})); err != nil {
		t.Fatal(err)
	}
	if buf.Len() != 0 {
		t.Fatal("records written before Flush/Close; want buffering")
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	got := buf.Bytes()
	header := []byte{
		0xd4, 0xc3, 0xb2, 0xa1, // magic, little-endian, microseconds
		0x02, 0x00, 0x04, 0x00, // version 2.4
		0, 0, 0, 0, // thiszone
		0, 0, 0, 0, // sigfigs
		0xff, 0xff, 0x00, 0x00, // snaplen 65535
		0xc3, 0x00, 0x00, 0x00, // network 195 = LINKTYPE_IEEE802_15_4_WITHFCS
	}
	if !bytes.Equal(got[:24], header) {
		t.Fatalf("header\n % x\nwant\n % x", got[:24], header)
	}
	rec := got[24:]
	n := len(getFrame) + 2
	wantRec := binary.LittleEndian.AppendUint32(nil, 1700000000)
	wantRec = binary.LittleEndian.AppendUint32(wantRec, 123456)
	wantRec = binary.LittleEndian.AppendUint32(wantRec, uint32(n))
	wantRec = binary.LittleEndian.AppendUint32(wantRec, uint32(n))
	if !bytes.Equal(rec[:16], wantRec) {
		t.Fatalf("record header % x, want % x", rec[:16], wantRec)
	}
	if psdu := rec[16 : 16+n]; !bytes.Equal(psdu[:len(getFrame)], getFrame) || !mac.CheckFCS(psdu) {
		t.Fatalf("record data % x is not the frame plus a good FCS", psdu)
	}
	rec = rec[16+n:]
	if want := []byte{0x02, 0x00, 0x6a, 0xe4, 0x79}; binary.LittleEndian.Uint32(rec[8:]) != 5 || !bytes.Equal(rec[16:], want) {
		t.Fatalf("second record % x", rec)
	}
	if err := w.WriteMPDU(ts, getFrame); !errors.Is(err, ErrClosed) {
		t.Fatalf("write after close: %v", err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestRejectsOversizedFrame(t *testing.T) {
	w, _ := NewWriter(&bytes.Buffer{})
	if err := w.WriteMPDU(time.Now(), make([]byte, mac.MaxMPDU+1)); !errors.Is(err, mac.ErrTooLong) {
		t.Fatalf("err = %v", err)
	}
}

func TestConcurrentWrites(t *testing.T) {
	var buf bytes.Buffer
	w, _ := NewWriter(&buf)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 50 {
				if err := w.WriteMPDU(time.Unix(1, 0), getFrame); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if want := 24 + 200*(16+len(getFrame)+2); buf.Len() != want {
		t.Fatalf("%d octets, want %d", buf.Len(), want)
	}
}

type errWriter struct{}

func (errWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestWriteErrorIsSticky(t *testing.T) {
	w, err := NewWriter(errWriter{})
	if err != nil {
		t.Fatal(err) // buffered: the header has not reached the writer yet
	}
	if err := w.Flush(); err == nil {
		t.Fatal("Flush to a failing writer succeeded")
	}
	if err := w.WriteMPDU(time.Now(), getFrame); err == nil {
		t.Fatal("write after a failed flush succeeded")
	}
}

// TestTsharkReadsCapture has tshark (installed by the test command) read
// a capture this package wrote.
func TestTsharkReadsCapture(t *testing.T) {
	tshark, err := exec.LookPath("tshark")
	if err != nil {
		t.Fatal("tshark not installed (Debian package tshark): run `make deps`")
	}
	path := filepath.Join(t.TempDir(), "get.pcap")
	w, err := Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w.WriteMPDU(time.Unix(1700000000, 0), getFrame)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd := exec.Command(tshark, "-r", path, "-T", "fields", "-e", "wpan.fcs_ok")
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("tshark: %v\n%s%s", err, out, stderr.String())
	}
	if fcs := strings.TrimSpace(string(out)); fcs != "1" && fcs != "True" {
		t.Fatalf("tshark finds the frame's FCS bad: %q", fcs)
	}
}
