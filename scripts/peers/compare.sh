#!/usr/bin/env bash
# Prints keyframe and its peers side by side on labelled footage:
#
#   scripts/peers/compare.sh DATA_DIR
#
# It runs `bin/keyframe-receiver eval --json DATA_DIR` and both peers of peers.py (through
# run.sh, which installs OpenCV from Debian if needed), all with the same
# scoring, and prints one table: a row per sequence and the overall row (mean
# over the sequences with positive frames); per tool the frame F1, the event
# precision/recall and the false events per 1000 quiet frames (with their
# count). A tool that cannot run is reported and left out of the table; the
# exit status is then 1, after the table of the others.
set -euo pipefail
if [ $# -ne 1 ]; then
	echo "usage: $0 DATA_DIR" >&2
	exit 2
fi
data=$1
if [ ! -d "$data" ]; then
	echo "compare: $data: not a directory" >&2
	exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
keyframe=${KEYFRAME_BIN:-$root/bin/keyframe-receiver}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

failed=0
tools=()
if [ ! -x "$keyframe" ]; then
	echo "compare: $keyframe not found: build it first (make build); showing the peers only" >&2
	failed=1
elif ! "$keyframe" eval --json "$data" >"$tmp/keyframe.json" 2>"$tmp/keyframe.err"; then
	echo "compare: '$keyframe eval --json $data' failed; showing the peers only:" >&2
	tail -n 5 "$tmp/keyframe.err" >&2
	failed=1
else
	tools+=(keyframe)
fi
for peer in frigate mog2; do
	if "$here/run.sh" --peer "$peer" --json "$data" >"$tmp/$peer.json" 2>"$tmp/$peer.err"; then
		tools+=("$peer")
	else
		echo "compare: peer $peer failed:" >&2
		tail -n 5 "$tmp/$peer.err" >&2
		failed=1
	fi
	grep -v '^peers: skipping' "$tmp/$peer.err" >&2 || true
done
if [ ${#tools[@]} -eq 0 ]; then
	echo "compare: nothing to compare" >&2
	exit 1
fi

python3 - "$tmp" "${tools[@]}" <<'EOF'
import json
import sys

tmp, tools = sys.argv[1], sys.argv[2:]
res = {}
for t in tools:
    with open(f"{tmp}/{t}.json") as f:
        res[t] = json.load(f)

names = []
for t in tools:
    for n in res[t].get("sequences", {}):
        if n not in names:
            names.append(n)
names.sort()


def num(v, nd=2):
    return "-" if v is None else f"{v:.{nd}f}"


def cells(s):
    if s is None:
        return ["n/a", "n/a", "n/a"]
    fe = s.get("false_events_per_1000_quiet")
    false = "-"
    if fe is not None:
        n = s.get("negatives")
        false = f"{fe:.1f}" + (f" ({round(fe * n / 1000)})" if n is not None else "")
    return [
        num(s.get("f1")),
        f"{num(s.get('event_precision'))}/{num(s.get('event_recall'))}",
        false,
    ]


widths = [5, 9, 10]
head1 = f"{'':36}" + "".join(f" | {t:^{sum(widths) + 2}}" for t in tools)
head2 = f"{'sequence':36}" + " | ".join(
    [""] + [f"{'F1':>5} {'evP/evR':>9} {'false/1k':>10}" for _ in tools]
)
print(head1)
print(head2)
print("-" * len(head2))


def row(label, per_tool):
    out = f"{label:36}"
    for c in per_tool:
        out += " | " + " ".join(f"{v:>{w}}" for v, w in zip(c, widths))
    print(out)


for n in names:
    row(n, [cells(res[t].get("sequences", {}).get(n)) for t in tools])
print("-" * len(head2))
row("overall (mean, seqs with positives)", [cells(res[t].get("overall")) for t in tools])
quiet = []
for t in tools:
    q = res[t].get("overall", {}).get("events_on_quiet_sequences")
    quiet.append(["", "", "-" if q is None else str(q)])
row("events on quiet sequences", quiet)
print()
print("F1: frame F1 (labelled frames only); evP/evR: event precision/recall;")
print("false/1k: predicted events overlapping no ground-truth event per 1000 quiet")
print("(label-0) frames, their count in brackets. Peers: events = flagged frames")
print("merged across gaps of <= 10 frames (they have no event lifecycle).")
EOF
exit $failed
