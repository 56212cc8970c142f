package pluginpb

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestGeneratedCodeIsUpToDate regenerates the Go code into a temporary
// directory and fails when it differs from the committed files: edit the
// .proto, run go generate, commit both.
func TestGeneratedCodeIsUpToDate(t *testing.T) {
	if _, err := exec.LookPath("protoc"); err != nil {
		t.Fatal("protoc not installed (Debian: protobuf-compiler): run `make deps`")
	}
	dir := t.TempDir()
	if out, err := exec.Command("./gen.sh", dir).CombinedOutput(); err != nil {
		t.Fatalf("gen.sh: %v\n%s", err, out)
	}
	for _, f := range []string{"gatewayd_plugin.pb.go", "gatewayd_plugin_grpc.pb.go"} {
		want, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s is stale: run go generate ./plugins/sdk/proto and commit the result", f)
		}
	}
}
