#!/usr/bin/env bash
# Checks the README's promise end to end with the real binary: `make run` prints
# the page URL and, within 30 s of the receiver answering there, the receiver's
# `verified event=... device=...` line (the line itself, anchored: an error line
# that mentions "verified" does not count); the page shows no event and no
# thumbnail without a session; the printed `keyframe demo: sign in:` link signs
# the demo owner in (a curl cookie jar), and the page then shows the event's
# thumbnail; the same link opened in headless chromium (if installed; under CI
# it must be) shows the demo owner's verified event with a thumbnail the browser
# decoded, within 30 s, and then an event page whose clip verified, loaded and starts
# in its pre-roll, and the camera's live view, whose picture changes
# (internal/browsertest/democheck); `keyframe-receiver verify` passes on the stored events and, after one byte
# of a stored thumbnail is flipped, fails naming the event.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
pid=""
trap '[ -z "$pid" ] || { kill -TERM $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; }; [ -z "${buildpid:-}" ] || wait $buildpid 2>/dev/null || true; rm -rf "$work"' EXIT
export DEMO_DIR="$work/demo"
export DEMO_ADDR=127.0.0.1:${DEMO_PORT:-18417}
# The browser check's test binary, built meanwhile.
"$(scripts/ensure-go.sh)" test -c -o "$work/democheck.test" ./internal/browsertest/democheck >"$work/democheck-build" 2>&1 &
buildpid=$!
# The binaries first, untimed: in a clean clone the first build compiles
# everything (well over a minute on two busy cores); what is timed below is
# the demo, not the compiler. `make run` then finds them built.
make --no-print-directory build >"$work/build" 2>&1 || { cat "$work/build"; echo "demo-check: make build failed"; exit 1; }
timeout 60 make --no-print-directory run >"$work/out" 2>&1 &
pid=$!
deadline=$((SECONDS + 45)) # make run's build finds the binaries current; the 30 s count starts at the URL
url=""
while [ $SECONDS -lt $deadline ]; do
	url=$(grep -o 'http://[0-9.:]*/' "$work/out" | head -1 || true)
	[ -n "$url" ] && break
	sleep 0.5
done
[ -n "$url" ] || { cat "$work/out"; echo "demo-check: no URL printed"; exit 1; }
# The URL is printed as the receiver starts: the 30 s count starts when it answers
# there (and `make run` is still running: a receiver left over on the port would
# answer, but ours would then fail to listen and end the demo).
up=""
while [ $SECONDS -lt $deadline ]; do
	kill -0 $pid 2>/dev/null || break
	if curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null; then
		up=1
		break
	fi
	sleep 0.2
done
[ -n "$up" ] || { cat "$work/out"; echo "demo-check: the receiver did not answer at $url"; exit 1; }
sleep 0.5
kill -0 $pid 2>/dev/null || { cat "$work/out"; echo "demo-check: make run ended after $url answered (another receiver on the port?)"; exit 1; }
start=$SECONDS
# The receiver's line for a stored record (receiver.Server's Events), from the line start.
verified_re='^verified event=[^ ]+ kind=[a-z]+ device=[0-9a-z]+ seq=[0-9]+ keystore=[a-z]+ thumbnail=[0-9]+B'
line=""
while [ $((SECONDS - start)) -lt 30 ]; do
	line=$(grep -m1 -E "$verified_re" "$work/out" || true)
	[ -n "$line" ] && break
	sleep 0.5
done
[ -n "$line" ] || { cat "$work/out"; echo "demo-check: no verified line within 30 s of the receiver answering at $url"; exit 1; }
echo "demo-check: first verified line $((SECONDS - start)) s after the receiver answered: $line"
event=$(sed -n 's/^verified event=\([^ ]*\) .*/\1/p' <<<"$line")
device=$(sed -n 's/.* device=\([^ ]*\) .*/\1/p' <<<"$line")
kind=$(sed -n 's/.* kind=\([^ ]*\) .*/\1/p' <<<"$line")
[ -n "$event" ] && [ -n "$device" ] || { echo "demo-check: line lacks event= or device="; exit 1; }
# Without a session: the sign-in page (or 401), no event, no thumbnail.
anon=$(curl -sS "$url")
if grep -q -e "$event" -e "$device" -e '<img' <<<"$anon"; then
	echo "demo-check: the page shows event data without a session"; exit 1
fi
grep -q 'action="/signin"' <<<"$anon" || { echo "demo-check: no sign-in form without a session"; exit 1; }
if [ "$(curl -sS -o /dev/null -w '%{http_code}' "${url%/}/media/$device/$event/$kind/0")" = 200 ]; then
	echo "demo-check: a thumbnail is served without a session"; exit 1
fi
echo "demo-check: without a session the page is the sign-in form, no event, no thumbnail"
signin=$(sed -n 's/^keyframe demo: sign in: //p' "$work/out" | head -1)
case "$signin" in "${url%/}/link/"?*) ;; *) cat "$work/out"; echo "demo-check: no 'keyframe demo: sign in:' link"; exit 1 ;; esac
# The link in a real browser: it signs in, and the page shows a verified event
# whose thumbnail the browser decoded. The link is then used up: curl signs in
# with a fresh one (keyframe-receiver owner link), and the printed one must fail.
wait $buildpid || { cat "$work/democheck-build"; echo "demo-check: cannot build the browser check"; exit 1; }
curl_link=$signin
if DEMO_SIGNIN_URL=$signin "$work/democheck.test" -test.run '^TestDemoSignIn$' -test.v >"$work/browser" 2>&1; then
	if grep -q -- '--- SKIP' "$work/browser"; then
		echo "demo-check: no chromium, the link was not opened in a browser: $(grep -m1 'not installed' "$work/browser" | sed 's/^ *//')"
	else
		echo "demo-check: in headless chromium: $(grep -m1 -o "e2ee set up on the account page.*" "$work/browser"); screenshot $(grep -m1 -o '/[^ ]*demo-e2ee.png' "$work/browser")"
		echo "demo-check: in headless chromium: $(grep -m1 -o "demo owner's page .*" "$work/browser"); screenshot $(grep -m1 -o '/[^ ]*demo-owner.png' "$work/browser")"
		echo "demo-check: in headless chromium: $(grep -m1 -o "event page .*clip of.*" "$work/browser"); screenshot $(grep -m1 -o '/[^ ]*demo-clip.png' "$work/browser")"
		echo "demo-check: in headless chromium: $(grep -m1 -o "live view .*" "$work/browser"); screenshot $(grep -m1 -o '/[^ ]*demo-live.png' "$work/browser")"
		curl_link=$(bin/keyframe-receiver owner link -data "$DEMO_DIR/receiver" -url "$url" demo 2>/dev/null)
	fi
else
	grep -v dbus "$work/browser" | tail -20; echo "demo-check: the sign-in link in headless chromium did not show a verified event with its thumbnail"; exit 1
fi
jar="$work/cookies"
# Fetched by a program the link only shows a page naming the account (it uses
# nothing up); curl posts it, as that page's button does.
curl -fsS "$curl_link" | grep -q 'Sign in as demo' || { echo "demo-check: fetching the link does not show the page naming the demo account"; exit 1; }
curl -fsS -c "$jar" -b "$jar" -d '' -o /dev/null "$curl_link"
page=$(curl -fsS -b "$jar" "$url")
grep -q "$event" <<<"$page" || { echo "demo-check: the signed-in page does not list event $event"; exit 1; }
# The demo camera seals its pictures (e2ee.owner = first): once the browser
# above set up end-to-end encryption, the page names sealed objects that only
# the page's script opens; the receiver serves them as ciphertext.
sealed=""
if [ "$curl_link" != "$signin" ]; then
	sealed=$(grep -o 'data-sealed="[^"]*"' <<<"$page" | head -1 | sed 's/data-sealed="\([^"]*\)"/\1/')
	[ -n "$sealed" ] || { echo "demo-check: no sealed thumbnail on the page after e2ee was set up"; exit 1; }
	curl -fsS -b "$jar" "${url%/}$sealed" -o "$work/thumb.sealed"
fi
for l in "$signin" "$curl_link"; do
	if curl -fsS -c "$jar" -b "$jar" -d '' -o /dev/null "$l" 2>/dev/null; then
		echo "demo-check: a one-time sign-in link worked twice"; exit 1
	fi
done
if [ -n "$sealed" ]; then
	[ "$(head -c 4 "$work/thumb.sealed")" = "KFE1" ] || { echo "demo-check: the served thumbnail is not a sealed object"; exit 1; }
	echo "demo-check: signed in by the one-time link, the page lists $event; a thumbnail is served as ciphertext only ($(stat -c %s "$work/thumb.sealed") bytes, KFE1)"
else
	echo "demo-check: signed in by the one-time link, the page lists $event (no browser: e2ee not set up, no pictures sealed yet)"
fi
kill -TERM $pid 2>/dev/null || true
wait $pid 2>/dev/null || true
# The receiver's data directory holds no JPEG: no file starts with FF D8 FF.
jpegs=0 files=0
while IFS= read -r -d '' f; do
	files=$((files + 1))
	[ "$(head -c 3 "$f" | od -An -tx1 | tr -d ' ')" = "ffd8ff" ] && { echo "demo-check: $f is a JPEG"; jpegs=$((jpegs + 1)); }
done < <(find "$DEMO_DIR/receiver" -type f -print0)
[ $jpegs = 0 ] || { echo "demo-check: the receiver stores $jpegs JPEG file(s) with e2ee on"; exit 1; }
echo "demo-check: the receiver's data directory: $files files, none a JPEG"
bin/keyframe-receiver verify -data "$DEMO_DIR/receiver"
victim=$(find "$DEMO_DIR/receiver" -name '*.sealed' | head -1)
[ -n "$victim" ] || victim=$(find "$DEMO_DIR/receiver" -name '*.cose' -path '*/events/*' | head -1)
[ -n "$victim" ] || { echo "demo-check: no stored sealed object or envelope to tamper with"; exit 1; }
vevent=$(basename "$victim"); vevent=${vevent%%-start*}; vevent=${vevent%%-end*}; vevent=${vevent%%-segment*}
b=$(dd if="$victim" bs=1 skip=100 count=1 status=none | od -An -tu1 | tr -d ' ')
printf "\\$(printf '%03o' $((255 - b)))" | dd of="$victim" bs=1 seek=100 count=1 conv=notrunc status=none
if out=$(bin/keyframe-receiver verify -data "$DEMO_DIR/receiver" 2>&1); then
	echo "$out"; echo "demo-check: verify passed after a byte of $victim was flipped"; exit 1
fi
grep -q "$vevent" <<<"$out" || { echo "$out"; echo "demo-check: verify failed but did not name $vevent"; exit 1; }
echo "demo-check: verify exits non-zero and names the event after a flipped byte of $(basename "$victim"):"
echo "$out" | head -3
echo "demo-check: ok"
