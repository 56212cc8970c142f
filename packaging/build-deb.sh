#!/usr/bin/env bash
# build-deb.sh builds gatewayd's Debian packages into dist/:
#   gatewayd_<version>-<revision>_<arch>.deb for each architecture asked
#   (default: amd64 arm64 armhf).
# It needs Go and the downloaded modules (go mod download), nothing from
# the network: nfpm is a Go tool of this module (go tool nfpm).
#
# Environment:
#   VERSION         upstream version (default: packaging/version.sh, which
#                   a later commit always makes higher)
#   DEB_REVISION    Debian revision (default 1)
#   DEB_MAINTAINER  the Maintainer field
#   DIST            output directory (default <repo>/dist)
#   GOARM           ARM version for armhf (default 6: Raspberry Pi 1 and
#                   Zero run Raspberry Pi OS armhf on ARMv6)
#   SOURCE_DATE_EPOCH  timestamp for files and changelog (default: the
#                   last commit's time), so builds are reproducible
#
# Usage: packaging/build-deb.sh [amd64] [arm64] [armhf]
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/.." && pwd)"
cd "$repo"

go="${GO:-go}"
dist="${DIST:-$repo/dist}"
arches=("$@")
[ ${#arches[@]} -gt 0 ] || arches=(amd64 arm64 armhf)

if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
	SOURCE_DATE_EPOCH="$(git -C "$repo" log -1 --format=%ct 2>/dev/null || date +%s)"
fi
export SOURCE_DATE_EPOCH

if [ -z "${VERSION:-}" ]; then
	VERSION="$("$here/version.sh" "$repo")"
fi
case "$VERSION" in
[0-9]*) ;;
*) echo "build-deb: VERSION $VERSION must start with a digit (Debian policy 5.6.12)" >&2; exit 1 ;;
esac
export DEB_UPSTREAM_VERSION="$VERSION"
export DEB_REVISION="${DEB_REVISION:-1}"
export DEB_MAINTAINER="${DEB_MAINTAINER:-gatewayd maintainers <maintainers@opaque-edge.example>}"
full="$DEB_UPSTREAM_VERSION-$DEB_REVISION"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# Files that do not depend on the architecture.
common="$work/common"
mkdir -p "$common"
for page in gatewayd.8 gatewayd.toml.5; do
	gzip -9n <"$here/man/$page" >"$common/$page.gz"
done
gzip -9n <"$repo/README.md" >"$common/README.md.gz"
{
	echo "gatewayd ($full) unstable; urgency=medium"
	echo
	echo "  * Package built from $(git -C "$repo" describe --tags --always --dirty 2>/dev/null || echo "an unknown revision")."
	echo
	echo " -- $DEB_MAINTAINER  $(LC_ALL=C date -u -R -d "@$SOURCE_DATE_EPOCH")"
} | gzip -9n >"$common/changelog.Debian.gz"

mkdir -p "$dist"
for arch in "${arches[@]}"; do
	goarm=""
	case "$arch" in
	amd64) goarch=amd64 ;;
	arm64) goarch=arm64 ;;
	armhf) goarch=arm goarm="${GOARM:-6}" ;;
	*) echo "build-deb: unknown architecture $arch (amd64, arm64, armhf)" >&2; exit 1 ;;
	esac
	stage="$work/$arch"
	mkdir -p "$stage"
	cp "$common"/* "$stage/"
	cp "$here/lintian-overrides" "$stage/lintian-overrides"
	build() {
		CGO_ENABLED=0 GOOS=linux GOARCH="$goarch" GOARM="$goarm" \
			"$go" build -trimpath -tags "$2" -ldflags "-s -w -X main.version=$VERSION" -o "$stage/$1" "./cmd/$1"
	}
	# nodemo: the daemon without the demo, so without the simulator, its
	# pseudo-terminal and the simulated nodes' end-to-end code
	# (cmd/gatewayd/README.md).
	build gatewayd nodemo
	build gatewayctl ""
	# The plugins shipped with the daemon (plugins/<package>/cmd/<name>),
	# with the package's version for -version (plugins/sdk), and the list
	# of their digests that a [[plugin]] without sha256 is checked against:
	# it changes with them on every upgrade, where a digest pinned in the
	# conffile would not.
	for main in httpcoap/cmd/gatewayd-http mqtt/cmd/gatewayd-mqtt slipradio/cmd/gatewayd-slipradio; do
		CGO_ENABLED=0 GOOS=linux GOARCH="$goarch" GOARM="$goarm" \
			"$go" build -trimpath -ldflags "-s -w -X github.com/opaque-edge/gatewayd/plugins/sdk.version=$VERSION" \
			-o "$stage/$(basename "$main")" "./plugins/$main"
	done
	(cd "$stage" && sha256sum gatewayd-http gatewayd-mqtt gatewayd-slipradio >SHA256SUMS)
	gzip -9n <"$here/man/gatewayctl.1" >"$stage/gatewayctl.1.gz"
	config="$here/nfpm.yaml"
	out="$dist/gatewayd_${full}_${arch}.deb"
	# nfpm resolves relative sources against its working directory.
	(cd "$here" && STAGE="$stage" DEB_ARCH="$arch" "$go" tool nfpm package \
		--config "$config" --packager deb --target "$out" >&2)
	echo "$out"
done
