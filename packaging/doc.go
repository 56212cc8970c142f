// Package packaging holds no Go code: it is the Debian package of
// gatewayd (nfpm.yaml, build-deb.sh, maintainer scripts, man pages, the
// default configuration) and the test that builds, lints, installs and
// upgrades that package. See README.md.
package packaging

// The copyright file lists every module linked into the programs; a test
// (gencopyright) fails when it is stale.
//go:generate go run ./gencopyright -o copyright

// Each shipped program's deps.txt lists the packages it links; a test
// (gendeps) fails when one is stale.
//go:generate go run ./gendeps
