#!/usr/bin/env bash
# Checks the systemd units of the Debian packages in DIR (default dist/, made
# by `make dist`) as they are packaged: unpacked into a scratch root beside
# the host's own units (for the targets they name), `systemd-analyze verify`
# must print nothing and succeed, and `systemd-analyze security --offline=yes`
# must rate each unit's exposure at most MAX_EXPOSURE (2.0; the agent's unit
# is the one the acceptance names). Neither needs systemd running as PID 1,
# so this works in a container. It also checks that the packaged
# /etc/keyframe/keyframe.conf is a conffile and what the packaged binary's
# `keyframe config -template` prints, and that each packaged binary accepts its
# unit's command line. docs/packages.md
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-dist}
max=${MAX_EXPOSURE:-2.0}
command -v systemd-analyze >/dev/null || { echo "check-units: no systemd-analyze (apt-get install systemd)" >&2; exit 1; }
arch=$(dpkg --print-architecture 2>/dev/null || echo amd64)
debs=("$dir"/keyframe_*_"$arch".deb "$dir"/keyframe-receiver_*_"$arch".deb)
for d in "${debs[@]}"; do
	[ -f "$d" ] || { echo "check-units: no $d: run make dist" >&2; exit 1; }
done

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/usr/lib/systemd/system"
for units in /usr/lib/systemd/system /lib/systemd/system; do
	[ -d "$units" ] && cp -a "$units/." "$root/usr/lib/systemd/system/"
done
for d in "${debs[@]}"; do
	dpkg-deb -x "$d" "$root"
done

fail=0
units=(keyframe.service keyframe-receiver.service)
paths=()
for u in "${units[@]}"; do paths+=("/usr/lib/systemd/system/$u"); done
if out=$(systemd-analyze verify --man=no --root="$root" "${paths[@]}" 2>&1) && [ -z "$out" ]; then
	echo "check-units: systemd-analyze verify ${units[*]}: clean"
else
	echo "check-units: systemd-analyze verify ${units[*]} is not clean:"
	echo "$out"
	fail=1
fi

threshold=$(awk -v m="$max" 'BEGIN { printf "%d", m * 10 + 0.5 }')
for u in "${units[@]}"; do
	out=$(systemd-analyze security --offline=yes --root="$root" --threshold="$threshold" "$u" 2>&1) && ok=1 || ok=0
	score=$(sed -n 's/.*Overall exposure level for .*: \([0-9.]*\).*/\1/p' <<<"$out")
	if [ "$ok" = 1 ] && [ -n "$score" ]; then
		echo "check-units: $u exposure $score (at most $max)"
	else
		echo "check-units: $u exposure ${score:-unknown}, over $max:"
		grep '✗' <<<"$out" || echo "$out"
		fail=1
	fi
done

# Each unit's command line as systemd runs it (its EnvironmentFile's flags
# expanded), with -h appended: the packaged binary must accept every word of
# it (a wrong subcommand or flag exits 2 and the unit would restart forever).
for u in "${units[@]}"; do
	line=$(sed -n 's/^ExecStart=//p' "$root/usr/lib/systemd/system/$u")
	words=$(
		set -a
		for f in $(sed -n 's/^EnvironmentFile=-\{0,1\}//p' "$root/usr/lib/systemd/system/$u"); do
			[ -f "$root$f" ] && . "$root$f"
		done
		eval "printf '%s\n' $line"
	)
	mapfile -t argv <<<"$words"
	if out=$("$root${argv[0]}" "${argv[@]:1}" -h 2>&1); then
		echo "check-units: $u: $line: accepted"
	else
		echo "check-units: $u: the packaged binary refuses its command line $line:"
		echo "$out" | head -n 5
		fail=1
	fi
done

conffiles=$(dpkg-deb -f "${debs[0]}" Package >/dev/null && dpkg-deb --ctrl-tarfile "${debs[0]}" | tar -xOf - ./conffiles)
if ! grep -qx /etc/keyframe/keyframe.conf <<<"$conffiles"; then
	echo "check-units: /etc/keyframe/keyframe.conf is not a conffile of ${debs[0]} (conffiles: $conffiles)"
	fail=1
fi
if ! cmp -s <("$root/usr/bin/keyframe" config -template) "$root/etc/keyframe/keyframe.conf"; then
	echo "check-units: the packaged /etc/keyframe/keyframe.conf is not what the packaged keyframe's config -template prints"
	fail=1
fi
if [ "$fail" != 0 ]; then
	exit 1
fi
echo "check-units: ${debs[*]}: ok"
