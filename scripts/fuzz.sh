#!/usr/bin/env bash
# Runs every native fuzz target of the module, one at a time (go test takes
# one -fuzz target per invocation).
#
#   scripts/fuzz.sh list                     print "package target" per line
#   scripts/fuzz.sh brief [fuzztime]         each target for fuzztime (5000x:
#                                            5000 executions), minimizing new
#                                            inputs for at most 5s; stops at
#                                            the first failure
#   scripts/fuzz.sh campaign [fuzztime] [out] [regexp]
#                                            each target (or those whose
#                                            "package target" matches regexp)
#                                            for fuzztime (10m); appends one
#                                            row per target to out/results.tsv
#                                            and rewrites out/results.md
#
# brief counts executions rather than seconds: Go 1.26's fuzz coordinator
# can fail a run that found nothing with "context deadline exceeded" when
# a -fuzztime duration ends while a starved worker is busy (go.dev/issue/75804,
# fixed in Go 1.27), which a busy 2-core machine makes likely. campaign
# runs by duration and records such an end as "ok (deadline race)", never
# as a crash: a crash always leaves its input in testdata.
#
# A failing input is left where go test leaves it, in the package's
# testdata/fuzz/<target>/, and the run exits non-zero (brief at once,
# campaign after the last target). FUZZ_PARALLEL sets go test -parallel
# (the number of fuzzing workers; 1 by default, so that a 2-core machine
# keeps a core for everything else). FUZZ_NICE, when set, is the niceness
# each go test runs at.
set -euo pipefail

cd "$(dirname "$0")/.."
GO=${GO:-go}
parallel=${FUZZ_PARALLEL:-1}
nice_cmd=()
if [ -n "${FUZZ_NICE:-}" ]; then
	nice_cmd=(nice -n "$FUZZ_NICE")
fi

# targets lists "./pkg FuzzName" for every fuzz target, found in the test
# files that git knows or that are new in the tree.
targets() {
	grep -rHo --include='*_test.go' '^func Fuzz[A-Za-z0-9_]*(' . |
		grep -v '/node_modules/' |
		sed -E 's|^(.*)/[^/]*_test\.go:func (Fuzz[A-Za-z0-9_]*)\($|\1 \2|' |
		sort -u
}

# corpus counts the inputs a target has: the generated corpus under
# $GOCACHE/fuzz/<import path>/<target> and the committed seeds under the
# package's testdata/fuzz/<target>.
corpus() {
	local pkg=$1 name=$2 imp cache n=0 m=0
	imp=$($GO list "$pkg")
	cache="$($GO env GOCACHE)/fuzz/$imp/$name"
	if [ -d "$cache" ]; then n=$(find "$cache" -type f | wc -l); fi
	if [ -d "$pkg/testdata/fuzz/$name" ]; then m=$(find "$pkg/testdata/fuzz/$name" -type f | wc -l); fi
	echo "$n $m"
}

brief() {
	local fuzztime=${1:-5000x} pkg name
	brief_log=$(mktemp)
	trap 'rm -f "$brief_log"' EXIT
	while read -r pkg name; do
		echo "fuzz: $pkg $name ($fuzztime)"
		if ! "${nice_cmd[@]}" $GO test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" \
			-fuzzminimizetime 5s -parallel "$parallel" "$pkg" >"$brief_log" 2>&1; then
			cat "$brief_log"
			echo "fuzz: $pkg $name FAILED; the input is in $pkg/testdata/fuzz/$name/" >&2
			return 1
		fi
	done < <(targets)
}

campaign() {
	local fuzztime=${1:-10m} out=${2:-fuzz-results} filter=${3:-.} pkg name failed=0
	mkdir -p "$out"
	local tsv="$out/results.tsv"
	if [ ! -f "$tsv" ]; then
		printf 'package\ttarget\tfuzztime\tstarted\tseconds\texecs\tnew_interesting\tcorpus_total\tcache_files\ttestdata_files\tresult\n' >"$tsv"
	fi
	local list
	list=$(targets | grep -E -- "$filter" || true)
	while read -r pkg name; do
		[ -n "$name" ] || continue
		local log
		log="$out/$(tr / _ <<<"${pkg#./}").$name.log"
		local before started t0 t1 rc=0
		before=$(find "$pkg/testdata/fuzz/$name" -type f 2>/dev/null | sort || true)
		started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
		t0=$(date +%s)
		echo "fuzz: $started $pkg $name for $fuzztime -> $log"
		"${nice_cmd[@]}" $GO test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" \
			-parallel "$parallel" "$pkg" >"$log" 2>&1 || rc=$?
		t1=$(date +%s)
		# The last progress line carries the totals:
		# "fuzz: elapsed: 10m0s, execs: 123 (45/sec), new interesting: 6 (total: 78)"
		local last execs newi total
		last=$(grep -E '^fuzz: elapsed: .*execs: [0-9]+' "$log" | tail -n 1 || true)
		execs=$(sed -nE 's/.*execs: ([0-9]+).*/\1/p' <<<"$last")
		newi=$(sed -nE 's/.*new interesting: ([0-9]+).*/\1/p' <<<"$last")
		total=$(sed -nE 's/.*\(total: ([0-9]+)\).*/\1/p' <<<"$last")
		local counts result
		counts=$(corpus "$pkg" "$name")
		if [ "$rc" -eq 0 ]; then
			result=ok
		else
			local after crasher
			after=$(find "$pkg/testdata/fuzz/$name" -type f 2>/dev/null | sort || true)
			crasher=$(comm -13 <(echo "$before") <(echo "$after") | head -n 1)
			if [ -z "$crasher" ] && grep -q '^    context deadline exceeded$' "$log"; then
				result="ok (deadline race)"
			else
				failed=1
				result="FAIL ${crasher:-see $log}"
			fi
		fi
		printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$pkg" "$name" "$fuzztime" "$started" \
			"$((t1 - t0))" "${execs:-0}" "${newi:-0}" "${total:-0}" ${counts} "$result" >>"$tsv"
		table "$tsv" >"$out/results.md"
	done <<<"$list"
	return $failed
}

# table renders results.tsv as a Markdown table, the last row per target.
table() {
	echo '| package | target | fuzz time | wall s | executions | new interesting | corpus (cache + testdata) | result |'
	echo '| --- | --- | --- | --- | --- | --- | --- | --- |'
	awk -F'\t' 'NR > 1 { row[$1" "$2] = $0; if (!(($1" "$2) in seen)) { seen[$1" "$2] = 1; order[n++] = $1" "$2 } }
		END { for (i = 0; i < n; i++) { split(row[order[i]], f, "\t");
			printf "| `%s` | `%s` | %s | %s | %s | %s | %s + %s | %s |\n", f[1], f[2], f[3], f[5], f[6], f[7], f[9], f[10], f[11] } }' "$1"
}

case "${1:-}" in
list) targets ;;
brief) shift; brief "$@" ;;
campaign) shift; campaign "$@" ;;
table) table "${2:?results.tsv}" ;;
*)
	sed -n '2,20p' "$0" >&2
	exit 2
	;;
esac
