package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/internal/testpeer"
	"github.com/opaque-edge/gatewayd/radio/sim"
)

func freePort(t *testing.T) int {
	t.Helper()
	return freePorts(t, "udp", 1)[0]
}

// freeTCPPort is a TCP port that no socket holds now, for a listener
// whose address a test must name beforehand (a plugin's). A UDP port
// from freePort may be held by a TCP connection; where gatewayd can be
// asked the address it bound (instance.adminAddr), port 0 is better.
func freeTCPPort(t *testing.T) int {
	t.Helper()
	return freePorts(t, "tcp", 1)[0]
}

// freePorts is n different ports of network ("udp" or "tcp") on
// 127.0.0.1 that no socket holds now: each is held until all are found,
// so that two in one test never coincide.
func freePorts(t *testing.T, network string, n int) []int {
	t.Helper()
	ports := make([]int, n)
	for i := range ports {
		var c io.Closer
		var addr net.Addr
		if network == "udp" {
			pc, err := net.ListenPacket("udp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			c, addr = pc, pc.LocalAddr()
		} else {
			l, err := net.Listen(network, "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			c, addr = l, l.Addr()
		}
		defer c.Close()
		ports[i] = int(netip.MustParseAddrPort(addr.String()).Port())
	}
	return ports
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// tool finds a real peer; the test command installs them, so a missing
// one is a failure, not a skip.
func tool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not found: run `make deps` (Debian package libcoap3-bin)", name)
	}
	return p
}

// coapClientRetrying runs coap-client-notls with args until ok holds of
// its output, for up to d, and returns the output: over the simulated
// radio a request may meet the radio coming up (5.03) or a lost frame
// (5.04), and a user tries again. Any other answer fails t at once.
func coapClientRetrying(t *testing.T, d time.Duration, what string, ok func(string) bool, args ...string) string {
	t.Helper()
	var out string
	until(t, d, what, func() error {
		out = coapClient(t, "coap-client-notls", args...)
		if ok(out) {
			return nil
		}
		if !strings.Contains(out, "5.03") && !strings.Contains(out, "5.04") {
			t.Fatalf("%s: %q", what, out)
		}
		return fmt.Errorf("%q", out)
	})
	return out
}

func coapClient(t *testing.T, bin string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, tool(t, bin), args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %q: %v\n%s", bin, args, err, out)
	}
	return string(out)
}

func startCoapServer(t *testing.T) int {
	t.Helper()
	port := freePort(t)
	cmd := exec.Command(tool(t, "coap-server-notls"), "-A", "127.0.0.1", "-p", fmt.Sprint(port), "-d", "20", "-v", "0")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	until(t, 10*time.Second, "coap-server-notls to answer", func() error {
		out, _ := exec.Command(tool(t, "coap-client-notls"), "-B", "1", "coap://127.0.0.1:"+fmt.Sprint(port)+"/").CombinedOutput()
		if !strings.Contains(string(out), "libcoap") {
			return fmt.Errorf("%q", out)
		}
		return nil
	})
	return port
}

// startBehindGatewayd starts libcoap's coap-server, and gatewayd with one
// UDP listener that may reach it; it returns the proxy's URI and the
// origin's.
func startBehindGatewayd(t *testing.T) (proxy, origin string) {
	t.Helper()
	o := startCoapServer(t)
	p := freePort(t)
	startGatewayd(t, fmt.Sprintf(`
[proxy]
listen = ["udp://127.0.0.1:%d"]
allow = ["127.0.0.1/32"]
timeout = "3s"
[metrics]
listen = ""
`, p))
	return fmt.Sprintf("coap://127.0.0.1:%d", p), fmt.Sprintf("coap://127.0.0.1:%d", o)
}

func TestLibcoapClientThroughGatewaydToLibcoapServer(t *testing.T) {
	P, target := startBehindGatewayd(t)

	if out := coapClient(t, "coap-client-notls", "-m", "get", "-P", P, target+"/"); !strings.Contains(out, "This is a test server made with libcoap") {
		t.Fatalf("GET through the proxy: %q", out)
	}
	// PUT creates a resource (-d), GET reads it back, POST, DELETE.
	coapClient(t, "coap-client-notls", "-m", "put", "-e", "forwarded-body", "-P", P, target+"/made")
	if out := coapClient(t, "coap-client-notls", "-m", "get", "-P", P, target+"/made"); !strings.Contains(out, "forwarded-body") {
		t.Fatalf("GET after PUT: %q", out)
	}
	coapClient(t, "coap-client-notls", "-m", "post", "-e", "posted", "-P", P, target+"/made2")
	coapClient(t, "coap-client-notls", "-m", "delete", "-P", P, target+"/made")
	out, _ := exec.Command(tool(t, "coap-client-notls"), "-m", "get", "-P", P, target+"/made").CombinedOutput()
	if !strings.Contains(string(out), "4.04") {
		t.Fatalf("GET after DELETE: want 4.04, got %q", out)
	}
}

// Block-wise transfers (RFC 7959) through gatewayd between libcoap's
// client and server, in 64-byte blocks: a body PUT in Block1 blocks
// reaches the origin whole, and comes back in Block2 blocks, twice (the
// second time the blocks may come from the cache). Each block is a
// request of its own that the proxy forwards like any other; Block1 and
// Block2 stay in the cache key, Size1 and Size2 out (§5.4.6).
func TestLibcoapBlockwiseThroughGatewayd(t *testing.T) {
	P, origin := startBehindGatewayd(t)
	target := origin + "/example_data"

	body := make([]byte, 2000)
	for i := range body {
		body[i] = byte('0' + i*7%43)
	}
	in := writeFile(t, "body", string(body))
	out := coapClient(t, "coap-client-notls", "-v", "7", "-b", "64", "-m", "put", "-f", in, "-P", P, target)
	if n := blockRequests(out, "c:PUT", "Block1:"); n < len(body)/64 {
		t.Fatalf("PUT took %d Block1 requests, want at least %d:\n%s", n, len(body)/64, out)
	}
	// The origin has the whole body.
	direct := filepath.Join(t.TempDir(), "direct")
	coapClient(t, "coap-client-notls", "-o", direct, target)
	if got, _ := os.ReadFile(direct); !bytes.Equal(got, body) {
		t.Fatalf("origin has %d bytes, want the %d put through the proxy", len(got), len(body))
	}
	for i := range 2 {
		got := filepath.Join(t.TempDir(), "got")
		out := coapClient(t, "coap-client-notls", "-v", "7", "-b", "64", "-o", got, "-P", P, target)
		if n := blockRequests(out, "c:GET", "Block2:"); n < len(body)/64 {
			t.Fatalf("GET %d: %d Block2 requests, want at least %d:\n%s", i+1, n, len(body)/64, out)
		}
		if b, _ := os.ReadFile(got); !bytes.Equal(b, body) {
			t.Fatalf("GET %d through the proxy: %d bytes, not the %d put", i+1, len(b), len(body))
		}
	}
}

// blockRequests counts the requests with method (libcoap's "c:GET") and
// option (its "Block2:") in coap-client's -v 7 log.
func blockRequests(log, method, option string) int {
	n := 0
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, method) && strings.Contains(l, option) {
			n++
		}
	}
	return n
}

func TestLibcoapClientSeesProxyErrors(t *testing.T) {
	// Nothing listens on closed: ICMP port unreachable. silent reads
	// nothing and answers nothing.
	silent, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	ports := freePorts(t, "udp", 2)
	proxy, closed := ports[0], ports[1]
	defer silent.Close()
	startGatewayd(t, fmt.Sprintf("[proxy]\nlisten = [\"udp://127.0.0.1:%d\"]\ntimeout = \"1s\"\n", proxy))
	P := fmt.Sprintf("coap://127.0.0.1:%d", proxy)
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"-P", P, "http://127.0.0.1/x"}, "5.05"},
		// A valid URI of a scheme without a default port is 5.05 too
		// (§5.7.2), not a bad option.
		{[]string{"-P", P, "foo://127.0.0.1/x"}, "5.05"},
		{[]string{"-P", P, "coap://192.0.2.7/x"}, "5.05"},
		{[]string{"-P", P, fmt.Sprintf("coap://127.0.0.1:%d/x", closed)}, "5.02"},
		{[]string{"-P", P, fmt.Sprintf("coap://%s/x", silent.LocalAddr())}, "5.04"},
		// §5.4.1 on the gateway's own resources: an unknown critical
		// option, and OSCORE without a context (RFC 8613 §8.2).
		{[]string{"-O", "65001,1", P + "/.well-known/core"}, "4.02"},
		{[]string{"-O", "9,0x0901", P + "/.well-known/core"}, "4.02"},
	}
	for _, c := range cases {
		out, _ := exec.Command(tool(t, "coap-client-notls"), append([]string{"-B", "10", "-m", "get"}, c.args...)...).CombinedOutput()
		if !strings.Contains(string(out), c.want) {
			t.Errorf("%v: want %s, got %q", c.args, c.want, out)
		}
	}
}

func TestDTLSListenerWithPSK(t *testing.T) {
	origin := startCoapServer(t)
	ports := freePorts(t, "udp", 2)
	udp, dtls := ports[0], ports[1]
	keys := writeFile(t, "psk", "# identity:key\nsensor-client:s3cret-key-0123\n")
	startGatewayd(t, fmt.Sprintf(`
[proxy]
listen = ["udp://127.0.0.1:%d", "dtls://127.0.0.1:%d"]
psk_file = %q
`, udp, dtls, keys))
	out := coapClient(t, "coap-client-openssl", "-B", "10", "-u", "sensor-client", "-k", "s3cret-key-0123",
		"-m", "get", "-P", fmt.Sprintf("coaps://127.0.0.1:%d", dtls), fmt.Sprintf("coap://127.0.0.1:%d/", origin))
	if !strings.Contains(out, "libcoap") {
		t.Fatalf("GET over DTLS through the proxy: %q", out)
	}
	// Observe over the DTLS session: libcoap's /time notifies every
	// second, and the hub forwards each state on the client's session.
	out = coapClient(t, "coap-client-openssl", "-B", "10", "-s", "4", "-u", "sensor-client", "-k", "s3cret-key-0123",
		"-P", fmt.Sprintf("coaps://127.0.0.1:%d", dtls), fmt.Sprintf("coap://127.0.0.1:%d/time", origin))
	if states := slices.Compact(regexp.MustCompile(`\d\d:\d\d:\d\d`).FindAllString(out, -1)); len(states) < 3 {
		t.Fatalf("observing over DTLS: %d states in 4 s, want at least 3: %q", len(states), out)
	}
	// A wrong key gets nothing.
	bad, _ := exec.Command(tool(t, "coap-client-openssl"), "-B", "3", "-u", "sensor-client", "-k", "wrong",
		"-m", "get", "-P", fmt.Sprintf("coaps://127.0.0.1:%d", dtls), fmt.Sprintf("coap://127.0.0.1:%d/", origin)).CombinedOutput()
	if strings.Contains(string(bad), "libcoap") {
		t.Fatalf("a wrong PSK was served: %q", bad)
	}
}

// testPKI writes a CA, a server certificate for 127.0.0.1 and a client
// certificate issued by it, and a client certificate from another CA, as
// PEM files in a temporary folder, and returns the folder.
func testPKI(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	ca := func(serial int64, cn string) *x509.Certificate {
		return &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn}, IsCA: true,
			BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	}
	leaf := func(serial int64, cn string, usage x509.ExtKeyUsage) *x509.Certificate {
		return &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}}
	}
	caCert, caKey := testpeer.Issue(t, dir, "ca", ca(1, "gatewayd test CA"), nil, nil)
	srv := leaf(2, "127.0.0.1", x509.ExtKeyUsageServerAuth)
	srv.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	testpeer.Issue(t, dir, "server", srv, caCert, caKey)
	testpeer.Issue(t, dir, "client", leaf(3, "sensor-client", x509.ExtKeyUsageClientAuth), caCert, caKey)
	otherCert, otherKey := testpeer.Issue(t, dir, "otherca", ca(4, "another CA"), nil, nil)
	testpeer.Issue(t, dir, "other", leaf(5, "sensor-client", x509.ExtKeyUsageClientAuth), otherCert, otherKey)
	return dir
}

// The DTLS listener with a certificate (RFC 7252 §9.1.3.3), client
// certificates required, and pre-shared keys beside it: libcoap's OpenSSL
// client with a certificate from the configured CA is served; without a
// certificate, or with one from another CA, its handshake is refused; a
// PSK client is still served.
func TestDTLSListenerWithCertificates(t *testing.T) {
	origin := startCoapServer(t)
	pki := testPKI(t)
	pkiFile := func(name string) string { return filepath.Join(pki, name) }
	ports := freePorts(t, "udp", 2)
	udp, dtls := ports[0], ports[1]
	keys := writeFile(t, "psk", "sensor-psk:s3cret-key-0123\n")
	startGatewayd(t, fmt.Sprintf(`
[proxy]
listen = ["udp://127.0.0.1:%d", "dtls://127.0.0.1:%d"]
psk_file = %q
cert_file = %q
key_file = %q
client_ca_file = %q
[metrics]
listen = ""
`, udp, dtls, keys, pkiFile("server.pem"), pkiFile("server.key"), pkiFile("ca.pem")))
	P := fmt.Sprintf("coaps://127.0.0.1:%d", dtls)
	target := fmt.Sprintf("coap://127.0.0.1:%d/", origin)

	// -C: the client checks the proxy's certificate against the CA.
	out := coapClient(t, "coap-client-openssl", "-B", "10", "-c", pkiFile("client.pem"), "-j", pkiFile("client.key"),
		"-C", pkiFile("ca.pem"), "-m", "get", "-P", P, target)
	if !strings.Contains(out, "libcoap") {
		t.Fatalf("GET with a client certificate: %q", out)
	}
	for _, c := range []struct {
		name string
		args []string
	}{
		{"no client certificate", []string{"-C", pkiFile("ca.pem")}},
		{"a certificate from another CA", []string{"-c", pkiFile("other.pem"), "-j", pkiFile("other.key"), "-C", pkiFile("ca.pem")}},
	} {
		args := append([]string{"-B", "3"}, c.args...)
		args = append(args, "-m", "get", "-P", P, target)
		bad, _ := exec.Command(tool(t, "coap-client-openssl"), args...).CombinedOutput()
		if strings.Contains(string(bad), "libcoap") || !strings.Contains(string(bad), "alert") {
			t.Errorf("%s: want the handshake refused, got %q", c.name, bad)
		}
	}
	out = coapClient(t, "coap-client-openssl", "-B", "10", "-u", "sensor-psk", "-k", "s3cret-key-0123", "-m", "get", "-P", P, target)
	if !strings.Contains(out, "libcoap") {
		t.Fatalf("GET with a pre-shared key beside certificates: %q", out)
	}
}

// An RSA certificate is served with ECDHE_RSA; no client certificate is
// asked for without client_ca_file.
func TestDTLSListenerWithRSACertificate(t *testing.T) {
	origin := startCoapServer(t)
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage:    x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert := writeFile(t, "rsa.pem", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	keyFile := writeFile(t, "rsa.key", string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})))
	dtls := freePort(t)
	startGatewayd(t, fmt.Sprintf(`
[proxy]
listen = ["dtls://127.0.0.1:%d"]
cert_file = %q
key_file = %q
[metrics]
listen = ""
`, dtls, cert, keyFile))
	out := coapClient(t, "coap-client-openssl", "-B", "10", "-v", "7", "-C", cert, "-m", "get",
		"-P", fmt.Sprintf("coaps://127.0.0.1:%d", dtls), fmt.Sprintf("coap://127.0.0.1:%d/", origin))
	if !strings.Contains(out, "This is a test server made with libcoap") {
		t.Fatalf("GET over DTLS with an RSA certificate: %q", out)
	}
	// OpenSSL's handshake log: the RSA certificate was sent (an RSA key
	// serves only ECDHE_RSA here), and no client certificate was asked for.
	if !strings.Contains(out, "read server certificate") || strings.Contains(out, "certificate request") {
		t.Fatalf("handshake: want the server's certificate and no certificate request:\n%s", out)
	}
}

func TestCheckNamesBadKeyAndLine(t *testing.T) {
	tests := []struct {
		name, config string
		ok           bool
		want         string
	}{
		{"minimal file of the docs", "[proxy]\nlisten = [\"udp://127.0.0.1:5683\"]\nallow = [\"127.0.0.1/32\"]\ntimeout = \"3s\"\n", true, "configuration ok"},
		{"unknown key", "[proxy]\nlisten = [\"udp://127.0.0.1:5683\"]\n\ntimeuot = \"3s\"\n", false, `:4: unknown key "proxy.timeuot"`},
		{"unknown table", "[proxxy]\nx = 1\n", false, `unknown key "proxxy`},
		{"bad prefix", "[proxy]\nallow = [\"10.0.0.0/33\"]\n", false, "c.toml:2: proxy: allow:"},
		{"bad duration", "[proxy]\ntimeout = \"soon\"\n", false, `:2: key "proxy.timeout"`},
		{"syntax", "[proxy\nlisten = 1\n", false, ".toml:2:"},
		{"hop limit", "[proxy]\nhop_limit = 0\n", false, "c.toml:2: proxy: hop_limit:"},
		// The radio drivers' own tables keep the file's rules.
		{"sim radio", "[[radio]]\nname = \"s\"\ndriver = \"sim\"\n[radio.sim]\nnodes = 2\nloss = 0.1\n", true, "configuration ok"},
		{"unknown key of a driver's table", "[[radio]]\nname = \"s\"\ndriver = \"sim\"\n[radio.sim]\nnodes = 2\nlos = 0.1\n", false, `c.toml:6: unknown key "radio.sim.los"`},
		{"unknown key of a radio", "[[radio]]\nname = \"s\"\ndriver = \"sim\"\nchanel = 12\n", false, `c.toml:4: unknown key "radio.chanel"`},
		{"driver's check", "[[radio]]\nname = \"s\"\ndriver = \"sim\"\n[radio.sim]\nnodes = 65\n", false, `c.toml:1: radio[0]: radio: invalid config: [[radio]] "s": sim.nodes = 65`},
		{"another driver's table", "[[radio]]\nname = \"r\"\ndriver = \"sim\"\n\n[[radio]]\nname = \"s\"\ndriver = \"spinel\"\ndevice = \"/dev/ttyACM0\"\nprefix = \"fd00:2::/64\"\n[radio.sim]\nnodes = 2\n", false, `c.toml:7: radio[1]: radio: invalid config: [[radio]] "s": sim: only for driver "sim"`},
		{"spinel's check", "[[radio]]\nname = \"s\"\ndriver = \"spinel\"\nprefix = \"fd00:2::/64\"\n", false, `c.toml:3: radio[0]: radio: invalid config: [[radio]] "s": device is required for driver "spinel"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeFile(t, "c.toml", tt.config)
			var out, errb bytes.Buffer
			err := run(context.Background(), []string{"-config", path, "-check"}, &out, &errb)
			if tt.ok {
				if err != nil || !strings.Contains(out.String(), tt.want) {
					t.Fatalf("err=%v out=%q", err, out.String())
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tt.want)
			}
		})
	}
}

func TestVersionFlag(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"-version"}, &out, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out.String(), "gatewayd ") {
		t.Fatalf("%q", out.String())
	}
}

func TestBinaryStopsOnSIGTERMOrSIGINTWithinFiveSeconds(t *testing.T) {
	for _, sig := range []os.Signal{syscall.SIGTERM, os.Interrupt} {
		g := startGatewayd(t, fmt.Sprintf("[proxy]\nlisten = [\"udp://127.0.0.1:%d\"]\n[metrics]\nlisten = \"\"\n", freePort(t)), asBinary())
		g.signal(t, sig)
		if err := g.wait(t, 5*time.Second); err != nil {
			t.Fatalf("exit after %v: %v\n%s", sig, err, g.log.String())
		}
	}
}

func TestLibcoapClientThroughGatewaydToSimRadioNodes(t *testing.T) {
	proxy := freePort(t)
	capture := filepath.Join(t.TempDir(), "air.pcap")
	startGatewayd(t, fmt.Sprintf(`
[proxy]
listen = ["udp://127.0.0.1:%d"]
timeout = "10s"

[[radio]]
name = "sim"
driver = "sim"
pcap = %q
`, proxy, capture))
	P := fmt.Sprintf("coap://127.0.0.1:%d", proxy)
	node := "coap://[" + sim.NodeAddr(sim.DefaultPrefix, 0).String() + "]"
	// Over a radio a request may fail and be tried again, as a user
	// would: while the radio comes up (5.03) or a frame is lost on a
	// loaded machine (5.04). Each answer must be right when it comes.
	try := func(what string, ok func(string) bool, args ...string) {
		t.Helper()
		coapClientRetrying(t, 20*time.Second, what, ok, args...)
	}
	try("GET temp", func(o string) bool { return strings.Contains(o, ".") && !strings.Contains(o, "5.0") },
		"-m", "get", "-P", P, node+"/sensors/temp")
	try("PUT valve", func(o string) bool { return strings.TrimSpace(o) == "" },
		"-m", "put", "-e", "open", "-P", P, node+"/actuators/valve")
	try("GET valve after PUT", func(o string) bool { return strings.Contains(o, "open") },
		"-m", "get", "-P", P, node+"/actuators/valve")
	big := strings.Repeat("abcdefghij", 40)
	try("400-byte echo", func(o string) bool { return strings.Contains(o, big) },
		"-m", "post", "-e", big, "-P", P, node+"/echo")
	// The capture decodes down to CoAP with tshark, with no malformed
	// frame and no bad FCS.
	tshark := tool(t, "tshark")
	ts := func(args ...string) string {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		args = append([]string{"-r", capture, "-d", "udp.port==5683,coap", "-o", "6lowpan.context0:" + sim.DefaultPrefix.String()}, args...)
		out, err := exec.CommandContext(ctx, tshark, args...).Output()
		if err != nil {
			t.Fatalf("tshark %q: %v", args, err)
		}
		return string(out)
	}
	// The capture is flushed periodically while gatewayd runs.
	until(t, 30*time.Second, "tshark to show the CoAP requests", func() error {
		coapLines := ts("-Y", "coap", "-T", "fields", "-e", "coap.code", "-e", "coap.opt.uri_path")
		if !strings.Contains(coapLines, "sensors") || !strings.Contains(coapLines, "echo") {
			return fmt.Errorf("%s", coapLines)
		}
		return nil
	})
	if bad := strings.TrimSpace(ts("-Y", `_ws.malformed || _ws.expert.severity >= "error" || wpan.fcs.bad`)); bad != "" {
		t.Fatalf("tshark flags frames:\n%s", bad)
	}
}
