// Package shipped names what the Debian package ships: each program's
// main package, the path it is installed at and the build tags it is
// built with, and the architectures it is built for. packaging/build-deb.sh
// builds them and packaging/nfpm.yaml installs them; the copyright file
// and each program's list of linked packages (deps.txt) are generated
// from this list, and the package's test holds the built programs to it.
package shipped

// Program is one executable of the package.
type Program struct {
	Pkg       string // main package, relative to the module's root
	Installed string // where the package installs it
	Tags      string // go build -tags; "" for none
}

// Name is the program's file name.
func (p Program) Name() string {
	for i := len(p.Installed) - 1; i >= 0; i-- {
		if p.Installed[i] == '/' {
			return p.Installed[i+1:]
		}
	}
	return p.Installed
}

// Programs are the package's executables. gatewayd is built without the
// demo (cmd/gatewayd/README.md): no simulator, no end-to-end code.
var Programs = []Program{
	{Pkg: "./cmd/gatewayd", Installed: "/usr/sbin/gatewayd", Tags: "nodemo"},
	{Pkg: "./cmd/gatewayctl", Installed: "/usr/bin/gatewayctl"},
	{Pkg: "./plugins/httpcoap/cmd/gatewayd-http", Installed: "/usr/lib/gatewayd/plugins/gatewayd-http"},
	{Pkg: "./plugins/mqtt/cmd/gatewayd-mqtt", Installed: "/usr/lib/gatewayd/plugins/gatewayd-mqtt"},
	{Pkg: "./plugins/slipradio/cmd/gatewayd-slipradio", Installed: "/usr/lib/gatewayd/plugins/gatewayd-slipradio"},
}

// GOARCHes are the architectures build-deb.sh builds: amd64, arm64, and
// armhf as GOARCH=arm. Programs are built with GOOS=linux and
// CGO_ENABLED=0.
var GOARCHes = []string{"amd64", "arm64", "arm"}
