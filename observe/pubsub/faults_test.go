package pubsub

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/internal/testutil"
)

// The state directory faults are real: a holder process (this test
// binary, holderEnv set) gets a mount namespace of its own, mounts a small
// tmpfs on the state directory, and runs the broker (runChild) as its
// child, which shares the namespace. The kernel then answers the broker's
// own writes with ENOSPC when the holder has filled the file system and
// with EROFS when it has remounted it read-only. As root (CI) the holder
// only unshares the mount namespace; otherwise it enters a user namespace
// first, where it may mount.
const holderEnv = "PUBSUB_TEST_HOLDER_DIR"

// holderFSSize is the tmpfs's size: room for a few topics.
const holderFSSize = "64k"

// runHolder serves the test's commands, one a line on stdin, answering
// each with one line on stdout: start (a broker; answers its address),
// kill (SIGKILL the broker), fill, free, ro, rw, ls.
func runHolder(dir string) int {
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+holderFSSize+",mode=0700"); err != nil {
		fmt.Fprintln(os.Stderr, "holder: mount tmpfs:", err)
		return 1
	}
	defer syscall.Unmount(dir, syscall.MNT_DETACH)
	var broker *exec.Cmd
	var brokerIn io.WriteCloser
	kill := func() {
		if broker != nil {
			_ = broker.Process.Kill()
			_ = broker.Wait()
			brokerIn.Close()
			broker = nil
		}
	}
	defer kill()
	filler := filepath.Join(dir, "filler")
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		var reply string
		var err error
		switch cmd := sc.Text(); cmd {
		case "start":
			broker = exec.Command(os.Args[0], "-test.run=^$")
			broker.Env = append(os.Environ(), childEnv+"="+dir, holderEnv+"=")
			broker.Stderr = os.Stderr
			if brokerIn, err = broker.StdinPipe(); err != nil {
				break
			}
			var out io.ReadCloser
			if out, err = broker.StdoutPipe(); err != nil {
				break
			}
			if err = broker.Start(); err != nil {
				break
			}
			reply, err = bufio.NewReader(out).ReadString('\n')
			reply = strings.TrimSpace(reply)
		case "kill":
			kill()
			reply = "killed"
		case "fill":
			var f *os.File
			if f, err = os.OpenFile(filler, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600); err != nil {
				break
			}
			n := 0
			for err == nil {
				var k int
				k, err = f.Write(make([]byte, 4096))
				n += k
			}
			f.Close()
			if errors.Is(err, syscall.ENOSPC) {
				reply, err = fmt.Sprintf("filled %d bytes", n), nil
			}
		case "free":
			err = os.Remove(filler)
			reply = "freed"
		case "ro", "rw":
			flags := uintptr(syscall.MS_REMOUNT)
			if cmd == "ro" {
				flags |= syscall.MS_RDONLY
			}
			err = syscall.Mount("tmpfs", dir, "tmpfs", flags, "size="+holderFSSize+",mode=0700")
			reply = cmd
		case "ls":
			var es []os.DirEntry
			es, err = os.ReadDir(dir)
			var names []string
			for _, e := range es {
				names = append(names, e.Name())
			}
			sort.Strings(names)
			reply = strings.Join(names, " ")
		default:
			err = fmt.Errorf("unknown command %q", cmd)
		}
		if err != nil {
			reply = "ERR " + err.Error()
		}
		fmt.Println(reply)
	}
	return 0
}

// holder is the test's side of a holder process.
type holder struct {
	t   *testing.T
	dir string
	in  io.WriteCloser
	out *bufio.Reader
	log *lockedBuffer // the holder's and its brokers' stderr
}

type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func startHolder(t *testing.T) *holder {
	t.Helper()
	h := &holder{t: t, dir: t.TempDir(), log: &lockedBuffer{}}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), holderEnv+"="+h.dir)
	cmd.Stderr = h.log
	// Go's exec marks / private after unsharing the mount namespace, so
	// nothing mounted there reaches the host.
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	if os.Geteuid() != 0 {
		cmd.SysProcAttr.Cloneflags = syscall.CLONE_NEWUSER
		cmd.SysProcAttr.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Geteuid(), Size: 1}}
		cmd.SysProcAttr.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getegid(), Size: 1}}
	}
	var err error
	if h.in, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	h.out = bufio.NewReader(out)
	if err := cmd.Start(); err != nil {
		t.Fatalf("holder with a mount namespace of its own: %v", err)
	}
	t.Cleanup(func() {
		h.in.Close()
		_ = cmd.Wait()
	})
	return h
}

// do sends one command and returns the holder's answer.
func (h *holder) do(cmd string) string {
	h.t.Helper()
	if _, err := fmt.Fprintln(h.in, cmd); err != nil {
		h.t.Fatalf("holder %s: %v\n%s", cmd, err, h.log.String())
	}
	line, err := h.out.ReadString('\n')
	line = strings.TrimSpace(line)
	if err != nil || strings.HasPrefix(line, "ERR ") {
		h.t.Fatalf("holder %s: %q %v\n%s", cmd, line, err, h.log.String())
	}
	return line
}

// start runs a broker on the state directory and returns its address.
func (h *holder) start() netip.AddrPort {
	h.t.Helper()
	line := h.do("start")
	ap, err := netip.ParseAddrPort(strings.TrimPrefix(line, "ADDR "))
	if err != nil {
		h.t.Fatalf("broker said %q: %v\n%s", line, err, h.log.String())
	}
	return ap
}

// waitLog waits for the brokers' log to contain every one of subs.
func (h *holder) waitLog(subs ...string) {
	h.t.Helper()
	defer func() {
		if h.t.Failed() {
			h.t.Logf("brokers' log:\n%s", h.log.String())
		}
	}()
	testutil.Eventually(h.t, fmt.Sprintf("log lines with %q", subs), func() bool {
		s := h.log.String()
		for _, sub := range subs {
			if !strings.Contains(s, sub) {
				return false
			}
		}
		return true
	})
}

// wantRefused checks a 5.00 whose diagnostic says why.
func wantRefused(t *testing.T, what string, got *coap.Message, why string) {
	t.Helper()
	if got.Code != coap.InternalServerError || !strings.Contains(string(got.Payload), why) {
		t.Fatalf("%s: %v %q, want 5.00 saying %q", what, got.Code, got.Payload, why)
	}
}

func wantPayload(t *testing.T, what string, got *coap.Message, want string) {
	t.Helper()
	if got.Code != coap.Content || string(got.Payload) != want {
		t.Fatalf("%s: %v %q, want 2.05 %q", what, got.Code, got.Payload, want)
	}
}

// A full state directory: publications and new topics are refused with
// 5.00 saying the state directory is full, and logged with the kernel's
// error; the refused changes leave no file and are not served; what was
// acknowledged before is served, and survives kill -9 while the file
// system is full; once there is room, publications are stored again.
func TestStateDirFullRefusesAndLosesNothingAcknowledged(t *testing.T) {
	h := startHolder(t)
	to := h.start()
	c := client(t)
	resp := doUDP(t, c, to, msg(coap.POST, "/ps", enc(t, map[int]any{KeyTopicName: "full", KeyResourceType: RTData, KeyTopicContentFormat: 0}), coap.ContentFormat, testCF))
	wantCode(t, "create", resp, coap.Created)
	dp := dec(t, resp.Payload)[KeyTopicData].(string)
	wantCode(t, "first publication", doUDP(t, c, to, msg(coap.PUT, dp, []byte("acknowledged"), coap.ContentFormat, 0)), coap.Created)
	before := h.do("ls")

	t.Logf("holder: %s", h.do("fill"))
	wantRefused(t, "publish on a full file system", doUDP(t, c, to, msg(coap.PUT, dp, []byte("refused"), coap.ContentFormat, 0)), "state_dir is full")
	h.waitLog("pubsub: cannot store publication", "no space left on device")
	wantRefused(t, "create on a full file system", doUDP(t, c, to, msg(coap.POST, "/ps", enc(t, sensor("new")), coap.ContentFormat, testCF)), "state_dir is full")
	wantPayload(t, "GET after the refusals", doUDP(t, c, to, msg(coap.GET, dp, nil)), "acknowledged")
	want := append(strings.Fields(before), "filler")
	sort.Strings(want)
	if got := h.do("ls"); got != strings.Join(want, " ") {
		t.Fatalf("state directory after the refusals: %q, want %q", got, want)
	}

	h.do("kill")
	to = h.start()
	wantPayload(t, "GET after kill -9 on a full file system", doUDP(t, c, to, msg(coap.GET, dp, nil)), "acknowledged")
	wantCode(t, "the refused topic", doUDP(t, c, to, msg(coap.POST, "/ps", enc(t, sensor("new")), coap.ContentFormat, testCF)), coap.InternalServerError)

	h.do("free")
	wantCode(t, "publish once there is room", doUDP(t, c, to, msg(coap.PUT, dp, []byte("later"), coap.ContentFormat, 0)), coap.Changed)
	wantCode(t, "create once there is room", doUDP(t, c, to, msg(coap.POST, "/ps", enc(t, sensor("new")), coap.ContentFormat, testCF)), coap.Created)
	h.do("kill")
	to = h.start()
	wantPayload(t, "GET after the second kill -9", doUDP(t, c, to, msg(coap.GET, dp, nil)), "later")
}

// A read-only state directory: publications, new topics, deletions of a
// topic or of its data are all refused with 5.00 saying the state
// directory is read-only, and logged; nothing changes, before or after
// kill -9 and a start on the still read-only file system.
func TestStateDirReadOnlyRefusesAndLosesNothingAcknowledged(t *testing.T) {
	h := startHolder(t)
	to := h.start()
	c := client(t)
	resp := doUDP(t, c, to, msg(coap.POST, "/ps", enc(t, map[int]any{KeyTopicName: "ro", KeyResourceType: RTData, KeyTopicContentFormat: 0}), coap.ContentFormat, testCF))
	wantCode(t, "create", resp, coap.Created)
	var loc []string
	for v := range resp.Options.All(coap.LocationPath) {
		loc = append(loc, string(v))
	}
	tp := "/" + strings.Join(loc, "/")
	dp := dec(t, resp.Payload)[KeyTopicData].(string)
	wantCode(t, "first publication", doUDP(t, c, to, msg(coap.PUT, dp, []byte("acknowledged"), coap.ContentFormat, 0)), coap.Created)
	before := h.do("ls")

	h.do("ro")
	wantRefused(t, "publish on a read-only file system", doUDP(t, c, to, msg(coap.PUT, dp, []byte("refused"), coap.ContentFormat, 0)), "state_dir is read-only")
	h.waitLog("pubsub: cannot store publication", "read-only file system")
	wantRefused(t, "create", doUDP(t, c, to, msg(coap.POST, "/ps", enc(t, sensor("new")), coap.ContentFormat, testCF)), "state_dir is read-only")
	wantRefused(t, "delete the topic's data", doUDP(t, c, to, msg(coap.DELETE, dp, nil)), "state_dir is read-only")
	wantRefused(t, "delete the topic", doUDP(t, c, to, msg(coap.DELETE, tp, nil)), "state_dir is read-only")
	wantPayload(t, "GET after the refusals", doUDP(t, c, to, msg(coap.GET, dp, nil)), "acknowledged")

	h.do("kill")
	to = h.start()
	wantPayload(t, "GET after kill -9, still read-only", doUDP(t, c, to, msg(coap.GET, dp, nil)), "acknowledged")
	wantCode(t, "the topic after kill -9", doUDP(t, c, to, msg(coap.GET, tp, nil)), coap.Content)
	h.do("rw")
	if got := h.do("ls"); got != before {
		t.Fatalf("state directory: %q, want %q", got, before)
	}
	wantCode(t, "publish once writable", doUDP(t, c, to, msg(coap.PUT, dp, []byte("later"), coap.ContentFormat, 0)), coap.Changed)
}

// startBroker runs a broker process (runChild) on dir and returns it and
// its address; the test kills it or it ends with the test.
func startBroker(t *testing.T, dir string) (*exec.Cmd, netip.AddrPort) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+dir)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("broker: %v", err)
	}
	to, err := netip.ParseAddrPort(strings.TrimSpace(strings.TrimPrefix(line, "ADDR ")))
	if err != nil {
		t.Fatalf("broker said %q: %v", line, err)
	}
	return cmd, to
}

// kill -9 while four publishers stream to four topics, three times: after
// each restart every topic holds its last acknowledged publication, or the
// one sent after it whose answer the kill cut off; never an older one.
func TestKill9UnderPublishLoadLosesNothingAcknowledged(t *testing.T) {
	dir := t.TempDir()
	cmd, to := startBroker(t, dir)
	c := client(t)
	const topics = 4
	var data [topics]string
	for i := range topics {
		resp := doUDP(t, c, to, msg(coap.POST, "/ps", enc(t, map[int]any{KeyTopicName: fmt.Sprint("load", i), KeyResourceType: RTData, KeyTopicContentFormat: 0}), coap.ContentFormat, testCF))
		wantCode(t, "create", resp, coap.Created)
		data[i] = dec(t, resp.Payload)[KeyTopicData].(string)
	}
	var (
		mu          sync.Mutex
		sent, acked [topics]int // guarded by mu
		total       int         // guarded by mu: acknowledgements so far
	)
	eps := make([]*coap.Endpoint, topics)
	for i := range eps {
		eps[i] = client(t)
	}
	for round := range 3 {
		ctx, cancel := context.WithCancel(t.Context())
		var wg sync.WaitGroup
		for i := range topics {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for ctx.Err() == nil {
					mu.Lock()
					sent[i]++
					seq := sent[i]
					mu.Unlock()
					resp, err := eps[i].Do(ctx, to, msg(coap.PUT, data[i], fmt.Appendf(nil, "%d", seq), coap.ContentFormat, 0))
					if err == nil && (resp.Code == coap.Changed || resp.Code == coap.Created) {
						mu.Lock()
						acked[i] = seq
						total++
						mu.Unlock()
					}
				}
			}()
		}
		want := 100 * (round + 1)
		testutil.EventuallyWithin(t, 30*time.Second, fmt.Sprintf("round %d: %d publications acknowledged", round, want), func() bool {
			mu.Lock()
			defer mu.Unlock()
			return total >= want
		})
		if err := cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		_ = cmd.Wait()
		cancel()
		wg.Wait()

		cmd, to = startBroker(t, dir)
		mu.Lock()
		for i := range topics {
			got := doUDP(t, c, to, msg(coap.GET, data[i], nil))
			if got.Code != coap.Content {
				t.Fatalf("round %d topic %d after kill -9: %v", round, i, got.Code)
			}
			v := string(got.Payload)
			if v != fmt.Sprint(acked[i]) && v != fmt.Sprint(sent[i]) {
				t.Fatalf("round %d topic %d after kill -9 holds %s; acknowledged %d, last sent %d", round, i, v, acked[i], sent[i])
			}
			// The next round publishes after what is stored.
			fmt.Sscan(v, &sent[i])
			acked[i] = sent[i]
		}
		t.Logf("round %d: killed after %d acknowledgements in all; every topic held its last acknowledged publication", round, total)
		mu.Unlock()
	}
}
