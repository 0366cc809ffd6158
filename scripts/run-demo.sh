#!/usr/bin/env bash
# make run: a local verifying receiver plus the agent, with the demo device
# enrolled and paired to the demo owner, printing one line per event the
# receiver verified and a one-time link that signs the demo owner in.
# Data lives in ./.keyframe-demo (DEMO_DIR; delete it to start over); the receiver
# listens on 127.0.0.1:8417 (DEMO_ADDR). Ctrl-C stops both. If the receiver
# cannot listen (the port taken), the demo stops and exits 1.
set -euo pipefail
bin=${1:-bin/keyframe}
recv=${2:-bin/keyframe-receiver}
demo=${DEMO_DIR:-.keyframe-demo}
addr=${DEMO_ADDR:-127.0.0.1:8417}
mkdir -p "$demo"
conf="$demo/agent.conf"
if [ ! -f "$conf" ]; then
	cat >"$conf" <<CONF
# The demo agent's configuration; every other key takes its default (keyframe config).
device.data_dir = $demo/device
upload.url = http://$addr
# Demo: retry fast while the receiver starts.
upload.retry_window = 1s
upload.quick_retry = 500ms
upload.backoff_cap = 5s
CONF
fi
"$bin" identity -config "$conf" -pubout "$demo/device.pub" >/dev/null
device=$("$bin" identity -config "$conf" -id)
"$recv" enroll -data "$demo/receiver" -key "$demo/device.pub" -owner demo >/dev/null
if ! "$recv" owner list -data "$demo/receiver" | grep -q '^demo '; then
	"$recv" owner add -data "$demo/receiver" demo >/dev/null 2>&1
fi
signin=$("$recv" owner link -data "$demo/receiver" -url "http://$addr/" demo 2>/dev/null)
# keyframe never falls back to a synthetic scene by itself: the demo names
# its source (the camera if there is one, else the synthetic scene, which
# every record then says is not a camera). Edit agent.conf to change it.
if ! grep -q '^capture.source' "$conf"; then
	if [ -e /dev/video0 ]; then kind=v4l2; else kind=synthetic; fi
	printf '# Chosen by the demo: v4l2 when /dev/video0 exists, else synthetic (records say "not from a camera").\ncapture.source = %s\n' "$kind" >>"$conf"
fi
if ! grep -q '^live.enabled' "$conf"; then
	printf '# Chosen by the demo: the owner'"'"'s page offers a live view of the camera (docs/live.md).\nlive.enabled = true\n' >>"$conf"
fi
if ! grep -q '^e2ee.owner' "$conf"; then
	printf '%s\n' "# Chosen by the demo: end-to-end encryption (docs/e2ee.md). The demo camera is paired by the" \
		"# operator, not claimed with a code, so it trusts the first owner key set the receiver gives" \
		"# (a claimed camera pins its owner's identity from the code). Until the owner sets it up on" \
		"# the account page, events carry no pictures. e2ee.owner = (empty) turns it off." \
		"e2ee.owner = first" "e2ee.keyset_poll = 5s" >>"$conf"
fi
kind=$(sed -n 's/^capture.source *= *//p' "$conf" | tail -n 1)
case $kind in
synthetic) src="the built-in synthetic scene, NOT a camera (records and the page say so)" ;;
dir) src="still images, NOT a camera (records and the page say so)" ;;
exec) src="the command in capture.exec" ;;
*) src="camera $(sed -n 's/^capture.device *= *//p' "$conf" | tail -n 1)" ; [ "$src" = "camera " ] && src="camera /dev/video0" ;;
esac
echo "keyframe demo: device $device, paired to owner \"demo\"; source: $src"
echo "keyframe demo: agent log in $demo/agent.log"

pids=()
cleanup() {
	trap - INT TERM EXIT
	stopping=1
	for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
}
trap cleanup INT TERM EXIT

"$recv" -data "$demo/receiver" -listen "$addr" -log-level warn &
rpid=$!
pids+=($rpid)
"$bin" run -config "$conf" 2>>"$demo/agent.log" &
pids+=($!)
echo "keyframe demo: events page http://$addr/ (sign in first)"
echo "keyframe demo: sign in: $signin"
if grep -q '^e2ee.owner *= *[^ ]' "$conf"; then
	echo "keyframe demo: end-to-end encryption is on: set it up on http://$addr/sessions after signing in; until then events carry no pictures"
fi
# The demo ends when either ends; the receiver ending first (it could not
# listen: the port is taken?) is a failure.
wait -n "${pids[@]}" || true
if [ -z "${stopping:-}" ] && ! kill -0 "$rpid" 2>/dev/null; then
	echo "keyframe demo: the receiver stopped (is $addr taken? set DEMO_ADDR=127.0.0.1:PORT)" >&2
	exit 1
fi
