#!/bin/sh
# version.sh prints gatewayd's version for the commit checked out in the
# repository at $1 (default: this script's), a Debian upstream version that
# a later commit always sorts above (dpkg --compare-versions):
#
#   at a tag v1.2.3                 1.2.3
#   4 commits after it              1.2.3+git4.abc1234  (after 1.2.3, before 1.2.4)
#   no v* tag yet, 57th commit      0.0.0~git57.abc1234 (before any 0.0.0)
#   not a git checkout              0.0.0~unknown
#
# The number is the count of commits since the tag (or since the start of
# history), so along a branch it only grows; the hash only says which
# commit. A date would not do: two commits of one day would sort by their
# hashes, at random. A shallow clone counts too few commits; build from a
# full one.
set -eu

repo="${1:-$(cd "$(dirname "$0")/.." && pwd)}"

if ! hash="$(git -C "$repo" rev-parse --short=7 HEAD 2>/dev/null)"; then
	echo "0.0.0~unknown"
	exit 0
fi
if tag="$(git -C "$repo" describe --tags --abbrev=7 --match 'v[0-9]*' 2>/dev/null)"; then
	# v1.2.3 → 1.2.3; v1.2.3-4-gabc1234 → 1.2.3+git4.abc1234
	echo "${tag#v}" | sed -E 's/-([0-9]+)-g([0-9a-f]+)$/+git\1.\2/'
else
	echo "0.0.0~git$(git -C "$repo" rev-list --count HEAD).$hash"
fi
