#!/usr/bin/env bash
# Runs every fuzz target of the module for a short time each: a CI smoke
# run, not a campaign. Targets are found with `go test -list`, so new ones in
# any package are picked up without editing this script; `go test -fuzz`
# takes one package and one target per call.
#
#   scripts/fuzz-short.sh                  # every package
#   scripts/fuzz-short.sh ./uploader/      # some packages
#   FUZZTIME=1m scripts/fuzz-short.sh      # longer (default 10s a target)
#
# A failing input is written by go test to <package>/testdata/fuzz/<target>/;
# commit it once the bug is fixed, so it stays in the seed corpus.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
GO=${GO:-go}
FUZZTIME=${FUZZTIME:-10s}
# Go minimises every new input for up to 60 s by default, which alone would
# eat a short run; bound it.
FUZZMINIMIZETIME=${FUZZMINIMIZETIME:-5s}
# Targets that work on files (the spool) fsync each input: use a tmpfs for
# t.TempDir when there is one and the caller did not choose.
if [ -z "${TMPDIR:-}" ] && [ -d /dev/shm ] && [ -w /dev/shm ]; then
	export TMPDIR=/dev/shm
fi
pkgs=("$@")
[ ${#pkgs[@]} -eq 0 ] && pkgs=(./...)

if ! list=$("$GO" test -list '^Fuzz' "${pkgs[@]}" 2>&1); then
	echo "$list"
	echo "fuzz-short: listing the fuzz targets failed (a package does not build?)" >&2
	exit 1
fi
# -list prints each package's matching names, then "ok <package> <time>".
targets=()
names=()
while read -r first second _; do
	case "$first" in
	Fuzz*) names+=("$first") ;;
	ok)
		for n in "${names[@]}"; do targets+=("$second $n"); done
		names=()
		;;
	*) names=() ;;
	esac
done <<<"$list"
if [ ${#targets[@]} -eq 0 ]; then
	echo "fuzz-short: no fuzz targets found in ${pkgs[*]}" >&2
	exit 1
fi

failed=()
for t in "${targets[@]}"; do
	read -r pkg name <<<"$t"
	echo "fuzz-short: $pkg $name for $FUZZTIME"
	# A run the engine ends with "context deadline exceeded" and no failing
	# input written (the time ran out while it minimised a new, passing
	# input) found nothing: it is run once more. A written input is a failure.
	for try in 1 2; do
		out=$("$GO" test -run '^$' -fuzz "^${name}\$" -fuzztime "$FUZZTIME" -fuzzminimizetime "$FUZZMINIMIZETIME" "$pkg" 2>&1) && rc=0 || rc=$?
		echo "$out"
		[ "$rc" != 0 ] || break
		new=$(git status --porcelain --untracked-files=all -- "$("$GO" list -f '{{.Dir}}' "$pkg")/testdata/fuzz/$name" 2>/dev/null)
		if [ "$try" = 1 ] && [ -z "$new" ] && grep -q 'context deadline exceeded' <<<"$out"; then
			echo "fuzz-short: $pkg $name: the engine's deadline ran out with no failing input; once more"
			continue
		fi
		failed+=("$pkg $name")
		break
	done
done
if [ ${#failed[@]} -gt 0 ]; then
	printf 'fuzz-short: FAILED: %s\n' "${failed[@]}" >&2
	exit 1
fi
echo "fuzz-short: ${#targets[@]} targets passed"
