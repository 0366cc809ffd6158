# shellcheck shell=bash disable=SC2154 # prog is set by the sourcing script
# Sourced by board-test.sh and install-test.sh: timing of their steps for the
# summary. The sourcing script sets prog (its name and architecture) first.
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
log() { echo "$prog: $*"; }
die() { echo "$prog: $*" >&2; exit 1; }

step_names=()
step_times=()
# step NAME CMD...: runs CMD, records its time for the summary.
step() {
	local name=$1 t
	shift
	t=$(now)
	log "== $name"
	"$@"
	step_names+=("$name")
	step_times+=("$(since "$t")")
	log "== $name: ${step_times[-1]}s"
}
