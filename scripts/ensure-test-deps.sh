#!/bin/sh
# Installs the real parts the tests start for themselves when they are
# missing: swtpm (a software TPM 2.0, for the TPM key backend), mosquitto
# (an MQTT broker, for the MQTT transport), chromium (a real browser,
# driven headless for the web pages' tests; internal/browsertest) and ffmpeg
# (a frame command writing MJPEG and raw YUV to stdout, for the exec source's
# tests, as rpicam-vid does on a Raspberry Pi; with libx264 the H.264
# clips' exec encoder, clip.encoder = exec; ffprobe for the H.264 and MP4
# tests, internal/h264/h264test). Debian
# packages only, with apt (apt-get update first; chromium is about 124 MB to
# download, 412 MB installed). Without root or sudo it says what to install
# and goes on: those tests then skip with that message, except in CI (CI
# set), where they fail instead of skipping.
set -eu
need=""
command -v swtpm >/dev/null 2>&1 || need="$need swtpm swtpm-tools"
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need="$need mosquitto"
[ -x /usr/bin/chromium ] || command -v chromium >/dev/null 2>&1 || need="$need chromium"
command -v ffmpeg >/dev/null 2>&1 || need="$need ffmpeg"
[ -n "$need" ] || exit 0
sudo=""
if [ "$(id -u)" != 0 ]; then
	if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo="sudo -n"; else
		echo "ensure-test-deps: not root and no sudo: install$need (Debian) to run the TPM, MQTT, browser and exec-source tests; they skip without them" >&2
		exit 0
	fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
	echo "ensure-test-deps: no apt-get: install$need to run the TPM, MQTT, browser and exec-source tests; they skip without them" >&2
	exit 0
fi
echo "ensure-test-deps: installing$need with apt-get (Debian packages, with what they depend on): the TPM, MQTT and browser tests start them; install them yourself to skip this step" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq >&2
# shellcheck disable=SC2086
$sudo apt-get install -y -qq --no-install-recommends $need >&2
