#!/usr/bin/env bash
# usage: [ARCH=arm64|armhf] scripts/board/board-test.sh [SCENARIO...]
#
# keyframe on an emulated ARM board: Debian's own kernel in a QEMU "virt" guest
# (TCG, no KVM needed), the vivid virtual camera, the cross-built agent, and a
# verifying receiver on the host reached over HTTPS through QEMU's user-mode
# network (the guest sees the host as 10.0.2.2). One boot per scenario:
#
#   motion    vivid's picture moves: the receiver verifies at least one event signed
#             by the guest's device key (its ID printed by the guest)
#   still     vivid's picture does not move: no event; then it moves (the canary) and
#             that event must be verified
#   clip      vivid's picture is still, moves, and is still again: the event's clip,
#             fetched from the receiver as its owner downloads it (records.zip), verifies
#             frame by frame against its end record and starts in its pre-roll (t_us < 0)
#   camloss   the camera is unplugged (vivid unbound, unloaded, loaded again) while the
#             agent runs: the agent survives and a record captured after the reload is
#             verified
#   watchdog  (arm64) i6300esb watchdog: a healthy agent runs three watchdog timeouts
#             without a reset; a stalled pipeline (camera unbound) gets the board reset,
#             and the next boot reads bootstatus != 0
#   overlay   still, with vivid's text overlay (a clock) shown and not masked: no event
#             (the detector learns the flickering clock pixels by itself); then the canary
#   nv12 yu12 grey rgb3
#             motion, shorter, with capture.format set to that V4L2 format: the agent
#             negotiates it with vivid and an event is verified
#   m2m       the stateful V4L2 memory-to-memory encoder: the kernel's vicodec
#             (built out of tree for the board's kernel by fetch-vicodec.sh) encodes
#             vivid's YU12 frames through board/m2mprobe, single- and multi-planar;
#             no agent runs. Its "M2M:" lines (frames/s, CPU) go into the summary
# Every scenario but camloss and watchdog also requires the agent to have processed
# at least 80 % of the frames its run time allows (the "agent stopped frames=N" line).
#
# The device key: in the scenarios named by BOARD_TPM (default "motion"; "all" or
# "none" too) it is a non-exportable key inside a TPM: a swtpm on the host, which
# the guest reaches as /dev/tpmrm0 through tpm_vtpm_proxy and the forwarder
# board/vtpmfwd (cross-built here); the key is made in that TPM from the host, as a
# factory would, and the receiver must report keystore=tpm. The other scenarios use
# a key file made on the host and baked into the initramfs (keystore=file).
#
# Durations: BOARD_RUN_SECONDS (25), BOARD_LOSS_AFTER (12), BOARD_AFTER_SECONDS (15),
# BOARD_CANARY_SECONDS (10), BOARD_FORMAT_SECONDS (15), BOARD_CLIP_STILL_SECONDS (12),
# BOARD_CLIP_MOVE_SECONDS (6), BOARD_CLIP_REST_SECONDS (20).
# BOARD_ALLOW_MISSING_KEYS=1 runs a scenario whose configuration keys the binary lacks.
#
# Needs bin/keyframe and bin/keyframe-receiver (make build) and bin/keyframe-linux-arm64 or -armv7 (make cross),
# and Go (scripts/ensure-go.sh) for the guest tools camctl, vtpmfwd and m2mprobe; installs qemu-system-arm, kmod,
# cpio, openssl, (for the TPM) swtpm, (for clip) curl and unzip and (for m2m) gcc-aarch64-linux-gnu or
# gcc-arm-linux-gnueabihf, make and xz-utils with apt-get if they are missing.
# The kernel is cached in ~/.cache/keyframe/board/ARCH (BOARD_CACHE); each run's
# files (logs, receiver data, initramfs) are in bin/board-test/ARCH (BOARD_WORK).
# Exits non-zero if any scenario fails. Details: docs/board-test.md.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
here=$root/scripts/board
arch=${ARCH:-arm64}
kf=$root/bin/keyframe
kr=$root/bin/keyframe-receiver
work=${BOARD_WORK:-$root/bin/board-test/$arch}
cache=${BOARD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/keyframe/board/$arch}
case $arch in
arm64)
	guest_bin=$root/bin/keyframe-linux-arm64
	qemu_pkg_bin="qemu-system-aarch64"
	qemu=(qemu-system-aarch64 -M virt -cpu cortex-a53)
	all=(motion still clip camloss watchdog overlay nv12 yu12 grey rgb3 m2m)
	default=("${all[@]}")
	cross_gcc=(aarch64-linux-gnu-gcc-12 gcc-aarch64-linux-gnu) # m2m: fetch-vicodec.sh's compiler and its package
	;;
armhf)
	guest_bin=$root/bin/keyframe-linux-armv7
	qemu_pkg_bin="qemu-system-arm"
	qemu=(qemu-system-arm -M "virt,highmem=off" -cpu cortex-a15)
	all=(motion still clip camloss overlay nv12 yu12 grey rgb3 m2m)
	default=("${all[@]}")
	cross_gcc=(arm-linux-gnueabihf-gcc-12 gcc-arm-linux-gnueabihf)
	;;
*)
	echo "board-test: unknown ARCH '$arch' (arm64 or armhf)" >&2
	exit 2
	;;
esac
scenarios=("$@")
[ ${#scenarios[@]} -gt 0 ] || scenarios=("${default[@]}")
# The scenarios whose device key lives in the TPM (BOARD_TPM: names, "all" or "none").
tpm_scenarios=()
case ${BOARD_TPM-motion} in
all) tpm_scenarios=("${all[@]}") ;;
none | "") ;;
*) read -ra tpm_scenarios <<<"${BOARD_TPM-motion}" ;;
esac

# Scenario durations in seconds (the guest runs at TCG speed: keep them short).
FPS=5                                   # capture.fps (vivid's default rate)
MIN_FRAME_SHARE=0.8                     # the agent must process this share of FPS x its run time
RUN_SECONDS=${BOARD_RUN_SECONDS:-25}    # motion, still, overlay: how long the agent runs
CANARY_SECONDS=${BOARD_CANARY_SECONDS:-10} # still, overlay: then the picture moves this long
FORMAT_SECONDS=${BOARD_FORMAT_SECONDS:-15} # nv12, yu12, grey, rgb3: how long the agent runs
CLIP_STILL_SECONDS=${BOARD_CLIP_STILL_SECONDS:-12} # clip: still picture (more than the pre-roll)
CLIP_MOVE_SECONDS=${BOARD_CLIP_MOVE_SECONDS:-6}    # clip: then the picture moves this long
CLIP_REST_SECONDS=${BOARD_CLIP_REST_SECONDS:-20}   # clip: then still again: the event ends, its clip is uploaded
PRE_ROLL=5                              # motion.pre_roll (seconds), the agent's default
M2M_FRAMES=150                          # m2m: frames m2mprobe encodes per run
# m2m: m2mprobe's own limit for a run (-timeout; its default, 60 s, is too short: it
# captures the frames at vivid's 5 fps first, 30 s, then encodes them at 4-7 frames/s
# under TCG), and the guest kills it M2M_TIMEOUT s after its start.
M2M_PROBE_TIMEOUT=150
M2M_TIMEOUT=180
# clip: motion.absorb_frames (default 100). vivid's picture stopped after moving is
# shifted, so it differs from the background until the detector absorbs it, as a box
# put down: at the default that is 20 s at 5 fps, and the event would only end then.
CLIP_ABSORB_FRAMES=25
LOSS_AFTER=${BOARD_LOSS_AFTER:-12}      # camloss: agent runs this long, then the camera goes
LOSS_SECONDS=5                          # camloss: the camera stays away at least this long
RELEASE_SECONDS=10                      # camloss: then the agent has this long to release it
AFTER_SECONDS=${BOARD_AFTER_SECONDS:-15} # camloss: agent runs this long after the reload
WDT_TIMEOUT=5                           # watchdog.timeout (seconds)
WDT_STALL=3                             # watchdog.stall (seconds)
HEALTHY_SECONDS=$((3 * WDT_TIMEOUT + 2)) # watchdog: healthy phase, > three timeouts
STALL_WAIT_SECONDS=40                   # watchdog: longest wait for the reset after the stall
# vivid's controls per scenario (capture.controls). Horizontal Movement: 0..6 = move
# left fast .. move right fast, 3 = no movement (vivid's default). vivid also draws a
# text block; with OSD Text Mode 1 ("Counters Only") it is one line, a clock and a
# frame counter that change every frame, as a camera's clock overlay does (mode 0
# adds control values, one of which also counts frames). It stays visible in every
# scenario. In "motion", "still" and "camloss" the agent is configured the way a user
# hides a clock overlay, with a motion.mask polygon over that line, so the mask is
# exercised; "overlay" is "still" without the mask: the detector's per-pixel
# variability threshold must keep the running clock from raising an event by itself.
MOVE_CONTROLS="horizontal_movement=6, osd_text_mode=1"
CANARY_CONTROLS="horizontal_movement=6" # still, overlay: set with camctl at the end; clip: the movement
STOP_CONTROLS="horizontal_movement=3"   # clip: set with camctl after the movement
STILL_CONTROLS="horizontal_movement=3, osd_text_mode=1"
OVERLAY_CONTROLS="horizontal_movement=3, osd_text_mode=1"
CLOCK_MASK="0,0 0.32,0 0.32,0.08 0,0.08" # vivid's first text line at 640x480, as fractions

# format_of SCENARIO: the capture.format a format scenario asks for (none: empty).
format_of() {
	case $1 in
	nv12 | yu12 | grey) echo "$1" | tr a-z A-Z ;;
	rgb3) echo RGB3 ;;
	esac
}
# is_format SCENARIO: SCENARIO is a format scenario (motion with capture.format).
is_format() { [ -n "$(format_of "$1")" ]; }

prog="board-test[$arch]"
# shellcheck source=scripts/board/steps.sh
. "$root/scripts/board/steps.sh"

t_total=$(now)

# uses_tpm SCENARIO: SCENARIO's device key lives in the TPM.
uses_tpm() {
	case " ${tpm_scenarios[*]} " in *" $1 "*) return 0 ;; esac
	return 1
}
# runs SCENARIO: SCENARIO is one of this run's.
runs() { [[ " ${scenarios[*]} " == *" $1 "* ]]; }
# any_tpm: a scenario of this run uses the TPM.
any_tpm() {
	local s
	for s in "${scenarios[@]}"; do uses_tpm "$s" && return 0; done
	return 1
}

# --- host tools ---------------------------------------------------------------
host_tools() {
	local need=()
	command -v "$qemu_pkg_bin" >/dev/null || need+=(qemu-system-arm)
	command -v depmod >/dev/null || need+=(kmod)
	command -v cpio >/dev/null || need+=(cpio)
	command -v openssl >/dev/null || need+=(openssl)
	command -v timeout >/dev/null || need+=(coreutils)
	if any_tpm && ! command -v swtpm >/dev/null; then need+=(swtpm); fi
	if [[ " ${scenarios[*]} " == *" clip "* ]]; then
		command -v curl >/dev/null || need+=(curl)
		command -v unzip >/dev/null || need+=(unzip)
	fi
	if runs m2m; then
		# fetch-vicodec.sh: the compiler the kernel was built with, for the guest
		command -v "${cross_gcc[0]}" >/dev/null || need+=("${cross_gcc[1]}")
		command -v make >/dev/null || need+=(make)
		command -v xz >/dev/null || need+=(xz-utils)
	fi
	if [ ${#need[@]} -eq 0 ]; then
		log "host tools present: $("$qemu_pkg_bin" --version | head -1)$(! any_tpm || echo ", $(swtpm --version 2>&1 | head -1)")"
		return
	fi
	local sudo=()
	[ "$(id -u)" = 0 ] || sudo=(sudo)
	log "installing ${need[*]}"
	local apt=("${sudo[@]}" apt-get -qq -o DPkg::Lock::Timeout=600 install -y --no-install-recommends "${need[@]}")
	"${apt[@]}" >/dev/null || { "${sudo[@]}" apt-get -qq update && "${apt[@]}" >/dev/null; } ||
		die "could not install ${need[*]}"
}

# --- what the agent binary supports ----------------------------------------------
# has_key KEY: keyframe's configuration knows KEY. (The key list is read once: with
# pipefail, "keyframe config | grep -q" fails at random when grep stops reading early.)
kf_keys="" # set in main
has_key() { grep -q "^$1 *=" <<<"$kf_keys"; }
# missing_keys SCENARIO: the configuration keys SCENARIO needs that keyframe lacks.
missing_keys() {
	local keys=() k out=()
	case $1 in
	motion | still | camloss) keys=(capture.controls motion.mask) ;;
	clip) keys=(capture.controls motion.mask motion.pre_roll motion.absorb_frames clip.enabled) ;;
	nv12 | yu12 | grey | rgb3) keys=(capture.format capture.controls motion.mask) ;;
	overlay) keys=(capture.controls) ;;
	watchdog) keys=(watchdog.device watchdog.timeout watchdog.stall motion.mask) ;;
	esac
	! uses_tpm "$1" || keys+=(device.key_backend device.tpm)
	for k in "${keys[@]}"; do has_key "$k" || out+=("$k"); done
	echo "${out[*]}"
}

# --- throwaway CA and server certificate ----------------------------------------
# The uploader speaks plain http only to loopback, and 10.0.2.2 is not loopback for
# the guest: the receiver serves HTTPS with a certificate for 10.0.2.2 (and
# 127.0.0.1) from a CA made for this run, which the guest trusts (upload.ca_file).
# Valid from yesterday, so a guest clock a little behind still accepts it.
make_pki() {
	local d=$work/pki start end
	mkdir -p "$d"
	: >"$d/index.txt"
	echo 01 >"$d/serial"
	start=$(date -u -d '1 day ago' +%y%m%d%H%M%SZ)
	end=$(date -u -d '7 days' +%y%m%d%H%M%SZ)
	cat >"$d/ca.cnf" <<EOF
[ca]
default_ca = board
[board]
dir = $d
database = $d/index.txt
new_certs_dir = $d
serial = $d/serial
default_md = sha256
policy = any
unique_subject = no
[any]
commonName = supplied
[ca_ext]
basicConstraints = critical,CA:true
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[server_ext]
basicConstraints = critical,CA:false
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:10.0.2.2,IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
	local ssl=(openssl ca -batch -notext -config "$d/ca.cnf" -startdate "$start" -enddate "$end")
	{
		openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$d/ca.key" &&
			openssl req -new -key "$d/ca.key" -subj "/CN=keyframe board-test CA" -out "$d/ca.csr" &&
			"${ssl[@]}" -selfsign -keyfile "$d/ca.key" -in "$d/ca.csr" -out "$d/ca.pem" -extensions ca_ext &&
			openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$d/server.key" &&
			openssl req -new -key "$d/server.key" -subj "/CN=10.0.2.2" -out "$d/server.csr" &&
			"${ssl[@]}" -cert "$d/ca.pem" -keyfile "$d/ca.key" -in "$d/server.csr" -out "$d/server.pem" -extensions server_ext &&
			openssl verify -CAfile "$d/ca.pem" "$d/server.pem"
	} >"$d/openssl.log" 2>&1 || { cat "$d/openssl.log" >&2; die "could not make the test CA"; }
	log "CA and server certificate (IP 10.0.2.2, 127.0.0.1), valid $(openssl x509 -in "$d/server.pem" -noout -startdate | cut -d= -f2) to $(openssl x509 -in "$d/server.pem" -noout -enddate | cut -d= -f2)"
}

# --- guest tools -----------------------------------------------------------------
# build_guest_tool NAME: board/NAME cross-built for the guest into $work/bin/NAME:
# camctl (sets vivid's controls while the agent captures: the canary) and, for
# the TPM scenarios, vtpmfwd (below).
build_guest_tool() {
	local name=$1 go env=(CGO_ENABLED=0 GOOS=linux)
	go=$("$root/scripts/ensure-go.sh") || die "no Go toolchain to build $name"
	case $arch in
	arm64) env+=(GOARCH=arm64) ;;
	armhf) env+=(GOARCH=arm GOARM=7) ;;
	esac
	mkdir -p "$work/bin"
	(cd "$root" && env "${env[@]}" "$go" build -trimpath -ldflags '-s -w' -o "$work/bin/$name" "./board/$name") ||
		die "could not build board/$name for $arch"
	log "$name for $arch: $(stat -c %s "$work/bin/$name") bytes"
}

# --- the TPM -------------------------------------------------------------------------
# The forwarder the guest runs to get a TPM: board/vtpmfwd, cross-built for the guest.

# One software TPM for the whole run (swtpm, state in $work/swtpm, a new TPM each
# run), its raw command channel on a free port of 127.0.0.1: the host provisions
# through it, each TPM scenario's guest reaches it as 10.0.2.2:PORT (QEMU's user
# network maps that to the host's loopback). swtpm serves one connection at a time:
# the scenarios run one after another. Absolute paths: swtpm may change directory.
swtpm_pid=""
swtpm_port=""
start_swtpm() {
	local d=$work/swtpm try port i
	mkdir -p "$d/state"
	for try in 1 2 3 4 5; do
		port=$((20000 + RANDOM % 30000))
		if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then continue; fi
		swtpm socket --tpm2 --tpmstate "dir=$d/state,mode=0600" \
			--server "type=tcp,port=$port,bindaddr=127.0.0.1" \
			--flags not-need-init,startup-clear --log "file=$d/swtpm.log,level=1" \
			>"$d/stdout" 2>&1 &
		swtpm_pid=$!
		for i in $(seq 100); do
			kill -0 "$swtpm_pid" 2>/dev/null || break
			(exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
			sleep 0.1
		done
		if kill -0 "$swtpm_pid" 2>/dev/null && (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
			swtpm_port=$port
			log "swtpm pid $swtpm_pid on 127.0.0.1:$port (guest: 10.0.2.2:$port), state $d/state"
			return 0
		fi
		log "swtpm on port $port did not start (try $try): $(tail -1 "$d/stdout" "$d/swtpm.log" 2>/dev/null | grep . | tail -1)"
		kill "$swtpm_pid" 2>/dev/null || true
		wait "$swtpm_pid" 2>/dev/null || true
		swtpm_pid=""
	done
	die "no swtpm could be started"
}
stop_swtpm() {
	[ -n "$swtpm_pid" ] || return 0
	kill -TERM "$swtpm_pid" 2>/dev/null || true
	wait "$swtpm_pid" 2>/dev/null || true
	swtpm_pid=""
}

# --- factory provisioning ------------------------------------------------------
# Two device keys, made on the host as a factory would and enrolled (and paired) at
# each scenario's receiver: a key file baked into the initramfs, and (when a
# scenario uses the TPM) a key generated inside the swtpm the guest will use, which
# never leaves it: the host only gets its public key and device ID.
device_file=""
device_tpm=""
provision() {
	local d=$work/factory out
	mkdir -p "$d"
	printf 'device.data_dir = %s\ndevice.key_file = %s\n' "$d" "$d/device.key" >"$d/factory.conf"
	"$kf" identity -config "$d/factory.conf" -pubout "$d/device.pub" >/dev/null
	device_file=$("$kf" identity -config "$d/factory.conf" -id)
	log "provisioned device $device_file (key file made on the host, baked into the initramfs)"
	any_tpm || return 0
	mkdir -p "$d/tpm"
	printf 'device.data_dir = %s\ndevice.key_backend = tpm\ndevice.tpm = tcp:127.0.0.1:%s\n' "$d/tpm" "$swtpm_port" >"$d/tpm.conf"
	out=$("$kf" identity -config "$d/tpm.conf" -pubout "$d/tpm.pub") || die "could not make the device key in the TPM"
	device_tpm=$(sed -n 's/^device: *//p' <<<"$out")
	grep -q '^backend: *tpm$' <<<"$out" || die "keyframe identity with the TPM: no 'backend: tpm' in: $out"
	[ -n "$device_tpm" ] || die "keyframe identity with the TPM printed no device: $out"
	log "provisioned device $device_tpm in the TPM (swtpm 127.0.0.1:$swtpm_port; $(grep -q '^created a new device key' <<<"$out" && echo "key created there" || echo "key already there") at the default persistent handle)"
}
# device_of SCENARIO, pub_of SCENARIO, keystore_of SCENARIO: its device ID, public
# key file and the keystore the receiver must report.
device_of() { if uses_tpm "$1"; then echo "$device_tpm"; else echo "$device_file"; fi; }
pub_of() { if uses_tpm "$1"; then echo "$work/factory/tpm.pub"; else echo "$work/factory/device.pub"; fi; }
keystore_of() { if uses_tpm "$1"; then echo tpm; else echo file; fi; }

# guest_conf SCENARIO: the agent's configuration for SCENARIO in the guest. upload.url
# comes from init (KEYFRAME_UPLOAD_URL, with the port on the kernel command line).
guest_conf() {
	local s=$1
	cat <<EOF
# keyframe board test, scenario $s (scripts/board/board-test.sh)
device.data_dir = /run/keyframe
$(if uses_tpm "$s"; then printf 'device.key_backend = tpm\ndevice.tpm = /dev/tpmrm0'; else echo "device.key_file = /etc/keyframe/device.key"; fi)
capture.source = v4l2
capture.device = /dev/video0
capture.fps = $FPS
capture.retry = 1s
upload.ca_file = /etc/keyframe/ca.pem
upload.retry_window = 1s
upload.quick_retry = 500ms
upload.backoff_cap = 2s
EOF
	local ctl=""
	case $s in
	motion | camloss | nv12 | yu12 | grey | rgb3) ctl=$MOVE_CONTROLS ;;
	still | clip) ctl=$STILL_CONTROLS ;;
	overlay) ctl=$OVERLAY_CONTROLS ;;
	esac
	if [ -n "$ctl" ]; then
		if has_key capture.controls; then
			echo "capture.controls = $ctl"
		else
			echo "# capture.controls = $ctl   (this keyframe has no capture.controls)"
		fi
	fi
	if is_format "$s"; then
		if has_key capture.format; then
			echo "capture.format = $(format_of "$s")"
		else
			echo "# capture.format = $(format_of "$s")   (this keyframe has no capture.format)"
		fi
	fi
	if [ "$s" != overlay ]; then
		if has_key motion.mask; then
			echo "motion.mask = $CLOCK_MASK"
		else
			echo "# motion.mask = $CLOCK_MASK   (this keyframe has no motion.mask)"
		fi
	fi
	# Every event has a clip (clip.enabled, on by default) from motion.pre_roll
	# before its trigger; clip asks for both, the others run with the defaults.
	! has_key motion.pre_roll || echo "motion.pre_roll = ${PRE_ROLL}s"
	if [ "$s" = clip ]; then
		if has_key clip.enabled; then
			echo "clip.enabled = true"
		else
			echo "# clip.enabled = true   (this keyframe has no clips)"
		fi
		echo "motion.absorb_frames = $CLIP_ABSORB_FRAMES"
	fi
	if [ "$s" = watchdog ]; then
		if has_key watchdog.device; then
			printf 'watchdog.device = /dev/watchdog0\nwatchdog.timeout = %ss\nwatchdog.stall = %ss\n' "$WDT_TIMEOUT" "$WDT_STALL"
		else
			echo "# watchdog.device = /dev/watchdog0   (this keyframe has no watchdog.* keys)"
		fi
	fi
}

initramfs() {
	local etc=$work/etc s
	rm -rf "$etc"
	mkdir -p "$etc"
	install -m600 "$work/factory/device.key" "$etc/device.key"
	install -m644 "$work/pki/ca.pem" "$etc/ca.pem"
	for s in "${all[@]}"; do guest_conf "$s" >"$etc/$s.conf"; done
	cat >"$etc/board.env" <<EOF
RUN_SECONDS=$RUN_SECONDS
LOSS_AFTER=$LOSS_AFTER
LOSS_SECONDS=$LOSS_SECONDS
RELEASE_SECONDS=$RELEASE_SECONDS
AFTER_SECONDS=$AFTER_SECONDS
CANARY_SECONDS=$CANARY_SECONDS
CANARY_CONTROLS="$CANARY_CONTROLS"
STOP_CONTROLS="$STOP_CONTROLS"
CLIP_STILL_SECONDS=$CLIP_STILL_SECONDS
CLIP_MOVE_SECONDS=$CLIP_MOVE_SECONDS
CLIP_REST_SECONDS=$CLIP_REST_SECONDS
FORMAT_SECONDS=$FORMAT_SECONDS
M2M_FRAMES=$M2M_FRAMES
M2M_PROBE_TIMEOUT=$M2M_PROBE_TIMEOUT
M2M_TIMEOUT=$M2M_TIMEOUT
HEALTHY_SECONDS=$HEALTHY_SECONDS
STALL_WAIT_SECONDS=$STALL_WAIT_SECONDS
EOF
	local progs=("$work/bin/camctl")
	! any_tpm || progs+=("$work/bin/vtpmfwd")
	[ ! -x "$work/bin/m2mprobe" ] || progs+=("$work/bin/m2mprobe")
	"$here/mkinitramfs.sh" "$cache" "$guest_bin" "$etc" "$work/initrd.cpio.gz" "${progs[@]}"
}

# --- the receiver ------------------------------------------------------------------
recv_pid=""
recv_port=""
# start_receiver DIR PUB: a fresh receiver with the device whose public key is PUB
# enrolled and paired, on a free
# port of 127.0.0.1 (QEMU maps the guest's 10.0.2.2 there). A receiver left over from
# an earlier run must not answer instead: the port is new each time, and the receiver
# must print that it listens on it and stay alive.
start_receiver() {
	local d=$1 pub=$2 try port i
	rm -rf "$d"
	mkdir -p "$d"
	"$kr" enroll -data "$d/data" -key "$pub" -owner board >/dev/null
	# The owner's account (its setup link is not needed: clip_fetch signs in by a
	# one-time sign-in link, as keyframe-receiver owner link gives an owner).
	"$kr" owner add -data "$d/data" board >/dev/null 2>&1
	for try in 1 2 3 4 5; do
		port=$((20000 + RANDOM % 30000))
		if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then continue; fi
		"$kr" -data "$d/data" -listen "127.0.0.1:$port" \
			-tls-cert "$work/pki/server.pem" -tls-key "$work/pki/server.key" \
			>"$d/stdout" 2>"$d/stderr" &
		recv_pid=$!
		for i in $(seq 100); do
			grep -q "^receiver: listening on https://127.0.0.1:$port/" "$d/stdout" 2>/dev/null && break
			kill -0 "$recv_pid" 2>/dev/null || break
			sleep 0.1
		done
		if kill -0 "$recv_pid" 2>/dev/null && grep -q "listening on https://127.0.0.1:$port/" "$d/stdout"; then
			recv_port=$port
			return 0
		fi
		log "receiver on port $port did not start (try $try): $(tail -1 "$d/stderr")"
		kill "$recv_pid" 2>/dev/null || true
		wait "$recv_pid" 2>/dev/null || true
	done
	die "no receiver could be started"
}
stop_receiver() {
	[ -n "$recv_pid" ] || return 0
	kill -TERM "$recv_pid" 2>/dev/null || true
	wait "$recv_pid" 2>/dev/null || true
	recv_pid=""
}
cleanup() {
	stop_receiver
	stop_swtpm
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- one scenario --------------------------------------------------------------------
results=()
# result SCENARIO PASS|FAIL SECONDS TEXT
result() { results+=("$(printf '%-9s %-4s %6ss  %s' "$1" "$2" "$3" "$4")"); }

# guest_val LOG PATTERN: the first BOARD line matching the sed PATTERN's capture.
guest_val() { sed -n "s/^BOARD: $2.*/\1/p" "$1" | tr -d '\r' | head -1; }

# negotiated LOG: the pixel format of the agent's "camera format negotiated" line,
# matched from the start of the line (an error line that mentions a format is no
# negotiated format).
negotiated() {
	sed -n 's/^AGENT: time=[^ ]* level=INFO msg="camera format negotiated" .* format=\([A-Z0-9]*\) .*/\1/p' "$1" | head -1
}

# check_frames LOG: the agent processed at least MIN_FRAME_SHARE x FPS x its run
# time frames: an agent that captures nothing, or stops capturing, fails. The
# count is its "agent stopped frames=N" line at SIGTERM, the run time what the
# guest measured from its start to the SIGTERM ("BOARD: agent ran Xs"). The stop
# line may go on with other counters (live_streams=...). Appends
# to the caller's reasons; sets frame_note.
check_frames() {
	local glog=$1 frames ran min
	frames=$(sed -n 's/^AGENT: time=[^ ]* level=INFO msg="agent stopped" frames=\([0-9]*\)\( .*\)\{0,1\}$/\1/p' "$glog" | tail -1)
	ran=$(guest_val "$glog" 'agent ran \([0-9.]*\)s')
	if [ -z "$ran" ]; then
		reasons+=("the guest did not say how long the agent ran")
		frame_note="${frames:-no} frames"
		return
	fi
	min=$(awk -v r="$ran" -v f="$FPS" -v k="$MIN_FRAME_SHARE" 'BEGIN { printf "%d", k * f * r }')
	if [ -z "$frames" ]; then
		reasons+=("the agent logged no frame count when it stopped (msg=\"agent stopped\" frames=N)")
	elif [ "$frames" -lt "$min" ]; then
		reasons+=("the agent processed $frames frames in ${ran}s, want >= $min ($MIN_FRAME_SHARE x $FPS fps x ${ran}s)")
	fi
	frame_note="${frames:-no} frames in ${ran}s (>= $min)"
}

# index_records DIR DEVICE: "EVENT KIND TIME" for each record from DEVICE in the
# receiver's index under DIR, TIME its capture time (Unix ms, the guest's clock).
index_records() {
	grep "\"device\":\"$2\"" "$1/data/index.jsonl" 2>/dev/null |
		sed -n 's/.*"event":"\([^"]*\)","kind":"\([a-z]*\)".*"time_unix_ms":\([0-9]*\).*/\1 \2 \3/p' || true
}
# records_after DIR DEVICE EPOCH: how many records from DEVICE were captured at or
# after EPOCH (Unix s, the guest's clock).
records_after() { index_records "$1" "$2" | awk -v e="$3" '$3 >= e * 1000' | wc -l; }
# records_before DIR DEVICE EPOCH: how many records from DEVICE show the picture
# before EPOCH: every record captured before it, except a segment of an event whose
# start record (its trigger's capture time; sent ahead of its segments) is at or
# after EPOCH and whose first frame is at most motion.pre_roll before that trigger:
# that is the event's pre-roll, the run-up its clip shows by design (docs/clips.md;
# a segment record's capture time is its first frame's).
records_before() {
	index_records "$1" "$2" | awk -v e="$3" -v pre="$PRE_ROLL" '
		{ ev[NR] = $1; kind[NR] = $2; t[NR] = $3; if ($2 == "start") trig[$1] = $3 }
		END {
			n = 0
			for (i = 1; i <= NR; i++) {
				if (t[i] >= e * 1000) continue
				if (kind[i] == "segment" && (ev[i] in trig) && trig[ev[i]] >= e * 1000 && t[i] >= trig[ev[i]] - pre * 1000) continue
				n++
			}
			print n
		}'
}

# clip_fetch DIR DEVICE PUB: each event from DEVICE whose end record the receiver
# verified, fetched as its owner downloads it from the event page (records.zip;
# signed in by a one-time link from keyframe-receiver owner link), unpacked and
# verified by keyframe-receiver verify -clip with the device's key PUB: every
# segment record against the end record's list, every frame against its segment's
# (docs/envelope.md §8.1-8.2). The receiver must be running. Sets clip_events and
# clip_lines (verify's line per event); appends to the caller's reasons.
clip_fetch() {
	local d=$1 device=$2 pub=$3 url="https://127.0.0.1:$recv_port" ev link out rc
	local c=$d/clip
	local curl=(curl -fsS --max-time 120 --cacert "$work/pki/ca.pem" -b "$c/cookies" -c "$c/cookies")
	mkdir -p "$c"
	clip_events=$(grep '^verified .* kind=end ' "$d/stdout" | grep " device=$device " |
		sed -n 's/^verified event=\([^ ]*\) .*/\1/p' | sort -u | tr '\n' ' ' | sed 's/ $//')
	if [ -z "$clip_events" ]; then
		reasons+=("the receiver verified no end record from the device: no complete clip")
		return
	fi
	if ! link=$("$kr" owner link -data "$d/data" -url "$url" board 2>>"$c/log") ||
		! "${curl[@]}" -d '' -o /dev/null "$link" 2>>"$c/log"; then
		reasons+=("could not sign in at the receiver as the owner (see $c/log)")
		return
	fi
	for ev in $clip_events; do
		if ! "${curl[@]}" -o "$c/$ev.zip" "$url/events/$device/$ev/records.zip" 2>>"$c/log" ||
			! unzip -q -o -d "$c" "$c/$ev.zip" >>"$c/log" 2>&1; then
			reasons+=("could not download and unpack event $ev's records.zip (see $c/log)")
			continue
		fi
		rc=0
		out=$("$kr" verify -clip "$c/$ev" -key "$pub" 2>&1) || rc=$?
		clip_lines+=("$out")
		[ "$rc" = 0 ] || reasons+=("event $ev's clip does not verify: $out")
	done
}

run_scenario() {
	local s=$1
	local d=$work/$s t0 missing limit extra=() reasons=() ok=PASS note="" tpm_arg=""
	local device keystore
	device=$(device_of "$s")
	keystore=$(keystore_of "$s")
	t0=$(now)
	missing=$(missing_keys "$s")
	if [ -n "$missing" ]; then
		if [ "${BOARD_ALLOW_MISSING_KEYS:-0}" != 1 ]; then
			log "$s: FAIL: this keyframe lacks the configuration key(s) $missing (see keyframe config); the scenario needs it. BOARD_ALLOW_MISSING_KEYS=1 runs it anyway"
			result "$s" FAIL "$(since "$t0")" "keyframe lacks $missing"
			return
		fi
		log "$s: keyframe lacks $missing; running anyway (BOARD_ALLOW_MISSING_KEYS=1), the scenario cannot pass"
		reasons+=("keyframe lacks $missing")
	fi
	start_receiver "$d" "$(pub_of "$s")"
	log "$s: receiver pid $recv_pid on https://127.0.0.1:$recv_port/ (guest: https://10.0.2.2:$recv_port), data $d/data"
	if uses_tpm "$s"; then
		tpm_arg="keyframe.tpm=$swtpm_port"
		log "$s: device key in the TPM (device $device): the guest reaches swtpm as 10.0.2.2:$swtpm_port through /dev/tpmrm0 and vtpmfwd"
	else
		log "$s: device key in a file (device $device)"
	fi
	case $s in
	motion) limit=$((RUN_SECONDS + 60)) ;;
	still | overlay) limit=$((RUN_SECONDS + CANARY_SECONDS + 60)) ;;
	clip) limit=$((CLIP_STILL_SECONDS + CLIP_MOVE_SECONDS + CLIP_REST_SECONDS + 60)) ;;
	nv12 | yu12 | grey | rgb3) limit=$((FORMAT_SECONDS + 60)) ;;
	camloss) limit=$((LOSS_AFTER + LOSS_SECONDS + RELEASE_SECONDS + AFTER_SECONDS + 60)) ;;
	watchdog) limit=$((HEALTHY_SECONDS + STALL_WAIT_SECONDS + 60)) ;;
	m2m) limit=$((2 * M2M_TIMEOUT + 60)) ;;
	esac
	if [ "$s" = watchdog ]; then
		# -no-reboot would end QEMU at the watchdog's reset; -action reboot=reset after
		# it lets the board reboot, while the guest's poweroff still ends QEMU.
		extra=(-device i6300esb -no-reboot -action reboot=reset)
	else
		extra=(-no-reboot)
	fi
	local q0 q1 qrc=0 glog=$d/guest.log
	q0=$(date +%s)
	# --foreground: Ctrl-C reaches QEMU (it starts no children of its own).
	timeout --foreground -k 5 "$limit" "${qemu[@]}" -smp 2 -m 512 -nographic \
		-kernel "$(ls "$cache"/kernel/boot/vmlinuz-*)" -initrd "$work/initrd.cpio.gz" \
		-append "console=ttyAMA0 rdinit=/init panic=-1 keyframe.scenario=$s keyframe.port=$recv_port $tpm_arg" \
		-netdev user,id=n0 -device virtio-net-device,netdev=n0 "${extra[@]}" \
		</dev/null >"$glog" 2>&1 || qrc=$?
	q1=$(date +%s)
	tr -d '\r' <"$glog" >"$glog.tmp" && mv "$glog.tmp" "$glog"
	kill -0 "$recv_pid" 2>/dev/null || reasons+=("the receiver died during the run (see $d/stderr)")
	local clip_events="" clip_lines=()
	[ "$s" != clip ] || clip_fetch "$d" "$device" "$(pub_of "$s")"
	stop_receiver

	# What the guest said and what the receiver verified.
	grep -E '^(BOARD|AGENT|VTPM|M2M): |^PROBE: .*(card|usable|movement|osd)|^\[ *[0-9.]*\] (tpm|vicodec)' "$glog" | sed "s/^/  $s| /" || true
	local verified
	verified=$(grep '^verified ' "$d/stdout" || true)
	# shellcheck disable=SC2001 # one prefix per line
	[ -z "$verified" ] || sed "s/^/  $s| receiver: /" <<<"$verified"
	case $qrc in
	0) ;;
	124) reasons+=("qemu ran into the ${limit}s timeout") ;;
	*) reasons+=("qemu exited with $qrc") ;;
	esac

	local gdev gver gepoch n_dev n_other
	gdev=$(guest_val "$glog" 'device \([a-z0-9]*\)')
	gver=$(guest_val "$glog" 'version \(.*\)')
	gepoch=$(guest_val "$glog" 'clock .* epoch=\([0-9]*\)')
	[ "$gver" = "$("$kf" version)" ] || reasons+=("guest version '$gver' is not the host's '$("$kf" version)'")
	[ "$gdev" = "$device" ] || reasons+=("guest device ID '$gdev' is not the provisioned $device")
	if [ -z "$gepoch" ]; then
		reasons+=("the guest printed no clock")
	elif [ "$gepoch" -lt $((q0 - 5)) ] || [ "$gepoch" -gt $((q1 + 5)) ]; then
		reasons+=("guest clock wrong: epoch $gepoch, the run was $q0..$q1")
	fi
	n_dev=$(echo "$verified" | grep -c " device=$device " || true)
	n_other=$(echo "$verified" | grep -v " device=$device " | grep -c . || true)
	[ "$n_other" = 0 ] || reasons+=("$n_other records verified from another device")
	# Every record from the device names where its key lives: the TPM or a file.
	local n_ks
	n_ks=$(echo "$verified" | grep " device=$device " | grep -c " keystore=$keystore " || true)
	[ "$n_ks" = "$n_dev" ] || reasons+=("$((n_dev - n_ks)) of $n_dev records from the device not verified as keystore=$keystore")
	local tpm_note="" relayed="" signs=""
	if uses_tpm "$s"; then
		# The guest had the TPM (/dev/tpmrm0 through vtpmfwd) and, but for the
		# watchdog's reset boot, says what the forwarder relayed: no command may
		# have failed in the forwarder, and every verified record needs a
		# signature the TPM made.
		grep -q '^BOARD: tpm /dev/tpmrm0 ready' "$glog" || reasons+=("the guest had no TPM (/dev/tpmrm0 through vtpmfwd)")
		relayed=$(guest_val "$glog" 'tpm relayed \(.*\)')
		signs=$(sed -n 's/.*[( ]Sign=\([0-9]*\).*/\1/p' <<<"$relayed")
		if [ "$s" != watchdog ]; then
			if [ -z "$relayed" ]; then
				reasons+=("the guest printed no TPM forwarder statistics")
			else
				grep -q ' 0 failed here' <<<"$relayed" || reasons+=("the TPM forwarder answered commands with its own error: $relayed")
				[ "${signs:-0}" -ge "$n_dev" ] || reasons+=("${signs:-0} TPM2_Sign commands relayed for $n_dev verified records")
			fi
		fi
		tpm_note=", key in the TPM: ${relayed:-no forwarder statistics}"
	fi

	local gres frame_note=""
	# (A guest that never finished printed no result line: grep fails, the reasons say so.)
	gres=$(grep '^BOARD: result ' "$glog" | tail -1 | sed 's/^BOARD: result //' || true)
	case $s in
	motion)
		local fmt vdev
		[ "$n_dev" -ge 1 ] || reasons+=("no record verified from device $device")
		fmt=$(negotiated "$glog")
		[ "$fmt" = YUYV ] || reasons+=("the agent negotiated '${fmt:-no format}', want YUYV (vivid's default, capture.format auto)")
		check_frames "$glog"
		[ "${gres%% *}" = PASS ] || reasons+=("guest: ${gres:-no result line}")
		vdev=$(echo "$verified" | sed -n 's/.* device=\([^ ]*\) .*/\1/p' | sort -u | tr '\n' ' ' | sed 's/ $//')
		log "$s: version: guest '$gver', host '$("$kf" version)'"
		log "$s: negotiated format: ${fmt:-(none logged by the agent)}"
		log "$s: device: guest says ${gdev:-?}, provisioned $device ($(uses_tpm "$s" && echo "in the host's swtpm" || echo "key file")), receiver verified ${vdev:-nothing} with keystore=$(echo "$verified" | sed -n 's/.* keystore=\([^ ]*\) .*/\1/p' | sort -u | tr '\n' ' ' | sed 's/ $//')"
		note="$n_dev records verified from device=$gdev keystore=$keystore; $frame_note"
		;;
	still | overlay)
		# No record while the picture is still; then the canary: the picture
		# moves for the last CANARY_SECONDS, and that event must be verified. An
		# agent that captures nothing, hangs or cannot upload fails here.
		local canary before=0 after=0
		canary=$(guest_val "$glog" 'canary epoch=\([0-9]*\)')
		if [ -n "$canary" ]; then
			before=$(records_before "$d" "$device" "$canary")
			after=$(records_after "$d" "$device" "$canary")
		else
			reasons+=("the guest printed no canary: vivid's picture never moved")
		fi
		[ "$before" = 0 ] || reasons+=("$before records verified from the still picture")
		[ -z "$canary" ] || [ "$after" -ge 1 ] ||
			reasons+=("no record verified of the canary (vivid's picture moving for the last ${CANARY_SECONDS}s): the agent did not capture, detect or upload")
		grep -q '^AGENT: time=[^ ]* level=INFO msg=capturing source=v4l2 ' "$glog" || reasons+=("the agent never captured from vivid")
		check_frames "$glog"
		[ "${gres%% *}" = PASS ] || reasons+=("guest: ${gres:-no result line}")
		note="$before records in ${RUN_SECONDS}s of a still picture"
		[ "$s" != overlay ] || note+=" with its text overlay"
		note+=", $after verified of the canary; $frame_note"
		;;
	clip)
		# No record from the still picture (the pre-roll's segments aside); the
		# event of the movement ended while the agent ran, and its clip verifies
		# frame by frame from the owner's download and starts before the trigger.
		local moved sigterm ended before=0 line ev segs frames first last n_clips=0 clip_note=""
		moved=$(guest_val "$glog" 'clip move epoch=\([0-9]*\)')
		sigterm=$(guest_val "$glog" 'agent sigterm epoch=\([0-9]*\)')
		if [ -n "$moved" ]; then
			before=$(records_before "$d" "$device" "$moved")
		else
			reasons+=("the guest printed no clip move: vivid's picture never moved")
		fi
		[ "$before" = 0 ] || reasons+=("$before records verified from the still picture before it moved")
		grep -q '^BOARD: clip stop epoch=' "$glog" || reasons+=("vivid's picture was not stopped after the movement")
		for line in "${clip_lines[@]}"; do
			log "$s: $line"
			case $line in "ok clip "*) ;; *) continue ;; esac
			segs=$(sed -n 's/.*, \([0-9]*\) segments, .*/\1/p' <<<"$line")
			frames=$(sed -n 's/.*, \([0-9]*\) frames, .*/\1/p' <<<"$line")
			first=$(sed -n 's/.* frames, \([-+][0-9.]*\)s to .*/\1/p' <<<"$line")
			last=$(sed -n 's/.* to \([-+][0-9.]*\)s from the trigger.*/\1/p' <<<"$line")
			ev=$(sed -n 's/.* event \([^ ,]*\),.*/\1/p' <<<"$line")
			case $first in
			-*) ;;
			*) reasons+=("event $ev's clip starts at ${first:-?}s from the trigger: no pre-roll") ;;
			esac
			# The event ended because the picture stopped, while the agent ran:
			# the agent logged its end (guest clock, ms) before the guest read
			# the clock (s) to send the SIGTERM (an end forced by the SIGTERM
			# comes after it).
			ended=$(sed -n 's/^AGENT: time=\([^ ]*\) level=INFO msg="event end" event='"$ev"' .*/\1/p' "$glog" | head -1)
			ended=$(date -u -d "${ended:-none}" +%s%3N 2>/dev/null || true)
			if [ -z "$ended" ] || [ -z "$sigterm" ] || [ "$ended" -ge $((sigterm * 1000)) ]; then
				reasons+=("event $ev did not end while the agent ran (its end at ${ended:-?} ms, the SIGTERM at ${sigterm:-?} s): the picture stopped ${CLIP_REST_SECONDS}s before")
			fi
			n_clips=$((n_clips + 1))
			clip_note+="event $ev: $segs segments, $frames frames verified, ${first}s to ${last}s from the trigger; "
		done
		[ "$n_clips" -ge 1 ] || [ -z "$clip_events" ] || reasons+=("no clip verified")
		check_frames "$glog"
		[ "${gres%% *}" = PASS ] || reasons+=("guest: ${gres:-no result line}")
		note="$before records of the still picture; ${clip_note:-no clip verified; }$frame_note"
		;;
	nv12 | yu12 | grey | rgb3)
		local fmt want
		want=$(format_of "$s")
		fmt=$(negotiated "$glog")
		[ "$fmt" = "$want" ] || reasons+=("the agent negotiated '${fmt:-no format}', want $want (capture.format)")
		[ "$n_dev" -ge 1 ] || reasons+=("no record verified from device $device")
		check_frames "$glog"
		[ "${gres%% *}" = PASS ] || reasons+=("guest: ${gres:-no result line}")
		note="format ${fmt:-none}: $n_dev records verified; $frame_note"
		;;
	camloss)
		local back after
		back=$(guest_val "$glog" 'camloss camera back epoch=\([0-9]*\)')
		after=0
		if [ -n "$back" ]; then
			# Records whose frame was captured after the camera came back: the
			# receiver's index holds each verified record's capture time (guest clock,
			# as the marker).
			after=$(grep "\"device\":\"$device\"" "$d/data/index.jsonl" 2>/dev/null |
				sed -n 's/.*"time_unix_ms":\([0-9]*\).*/\1/p' | awk -v b="$back" '$1 >= b * 1000' | wc -l)
		else
			reasons+=("the camera did not come back")
		fi
		[ "$after" -ge 1 ] || reasons+=("no record verified whose frame was captured after the camera came back")
		[ "${gres%% *}" = PASS ] || reasons+=("guest: ${gres:-no result line}")
		note="$after of $n_dev verified records captured after the camera came back"
		;;
	watchdog)
		local boots healthy seen stall_at reset_epoch
		boots=$(grep -c '^BOARD: boot scenario=watchdog' "$glog" || true)
		healthy=$(guest_val "$glog" 'watchdog healthy \([0-9]*\)s without reset state=active timeout='"$WDT_TIMEOUT"'s')
		seen=$(guest_val "$glog" 'watchdog reset seen bootstatus=\([0-9]*\)')
		stall_at=$(guest_val "$glog" 'watchdog stalling.* epoch=\([0-9]*\)')
		reset_epoch=$(grep '^BOARD: clock ' "$glog" | sed -n 2p | sed 's/.*epoch=//')
		grep -q '^BOARD: watchdog .* bootstatus=0 ' "$glog" || reasons+=("the first boot did not read bootstatus=0")
		[ -n "$healthy" ] && [ "$healthy" -ge $((3 * WDT_TIMEOUT)) ] ||
			reasons+=("no healthy phase of 3 watchdog timeouts with the watchdog armed (state=active timeout=${WDT_TIMEOUT}s)")
		[ "$boots" = 2 ] || reasons+=("$boots boots, want 2")
		[ -n "$seen" ] && [ "$seen" != 0 ] || reasons+=("no boot saw a watchdog reset (bootstatus)")
		# The reset must come from a live agent that stopped petting because its
		# frames stalled, not from one that exited (a crash leaves the watchdog
		# running): the guest checked every second after the stall that the agent
		# lived, it logged the failing frames check, and the kernel never saw
		# the watchdog closed unstopped.
		local alive failed stall_log
		alive=$(sed -n 's/^BOARD: watchdog stalled \([0-9]*\)s, agent alive$/\1/p' "$glog" | tail -1)
		[ "${alive:-0}" -ge "$WDT_STALL" ] ||
			reasons+=("the agent was last seen alive ${alive:-0}s after the stall, want >= ${WDT_STALL}s (watchdog.stall): the pipeline must stall while the process lives")
		failed=$(sed -n 's/^BOARD: check failed: //p' "$glog" | paste -sd ';' | sed 's/;/; /g')
		[ -z "$failed" ] || reasons+=("guest: $failed")
		stall_log=$(awk '/^BOARD: watchdog stalling/ { on = 1 } on && /^BOARD: boot scenario=watchdog/ { exit } on' "$glog")
		grep -q '^AGENT: .* msg="watchdog: health check failing, not petting.* check=frames' <<<"$stall_log" ||
			reasons+=("the agent did not log that it stopped petting for its stalled frames")
		! grep -q 'watchdog did not stop' "$glog" ||
			reasons+=("the kernel saw the watchdog closed without being stopped (the agent exited?)")
		note="healthy ${healthy:-0}s (timeout ${WDT_TIMEOUT}s), agent alive ${alive:-0}s after the stall, ${boots} boots, bootstatus=${seen:-none}"
		if [ -n "$stall_at" ] && [ -n "$reset_epoch" ]; then
			note+=", stall to rebooted clock $((reset_epoch - stall_at))s"
		fi
		;;
	m2m)
		# vicodec's three nodes appeared, and each run of m2mprobe (single-planar,
		# then multi-planar) exited 0 having printed "M2M: PASS". Its other "M2M:"
		# lines (frames/s, CPU) and the guest's CPU use during the run make the note.
		local nodes n mp runs=0 run_log done_line figures
		nodes=$(guest_val "$glog" 'm2m nodes multiplanar=0: *\(.*\)')
		for n in stateful-encoder stateful-decoder stateless-decoder; do
			[[ " $nodes " == *"=$n "* ]] || reasons+=("vicodec's $n node did not appear (nodes: ${nodes:-none})")
		done
		for mp in 0 1; do
			grep -q "^BOARD: m2m run multiplanar=$mp\$" "$glog" || continue
			runs=$((runs + 1))
			# This run's lines: from its "m2m run" line to the next one.
			run_log=$(awk -v m="BOARD: m2m run multiplanar=$mp" '$0 == m { on = 1; next } /^BOARD: m2m run / { on = 0 } on' "$glog")
			done_line=$(sed -n "s/^BOARD: m2m done multiplanar=$mp //p" <<<"$run_log" | head -1)
			grep -q '^M2M: PASS' <<<"$run_log" || reasons+=("m2mprobe multiplanar=$mp printed no M2M: PASS")
			[[ "$done_line" == "rc=0 "* ]] || reasons+=("m2mprobe multiplanar=$mp: ${done_line:-did not finish}")
			figures=$(grep '^M2M: ' <<<"$run_log" | grep -v '^M2M: PASS' | sed 's/^M2M: //' | paste -sd ';' | sed 's/;/; /g' || true)
			note+="multiplanar=$mp: ${figures:-no figures}; ${done_line:-not run}. "
		done
		[ "$runs" -ge 1 ] || reasons+=("no m2m run in the guest")
		[ "${gres%% *}" = PASS ] || reasons+=("guest: ${gres:-no result line}")
		note="vicodec nodes ${nodes:-none}; $note"
		note=${note%. }
		;;
	esac
	note+=$tpm_note
	[ ${#reasons[@]} -eq 0 ] || ok=FAIL
	local why=""
	[ "$ok" = PASS ] || why=" [$(printf '%s; ' "${reasons[@]}" | sed 's/; $//')]"
	log "$s: $ok in $(since "$t0")s (qemu $((q1 - q0))s): $note$why"
	result "$s" "$ok" "$(since "$t0")" "$note$why"
}

# --- main ------------------------------------------------------------------------------
[ -x "$kf" ] || die "no $kf: run make build (or make board-test)"
[ -x "$kr" ] || die "no $kr: run make build (or make board-test)"
[ -x "$guest_bin" ] || die "no $guest_bin: run make cross (or make board-test)"
for s in "${scenarios[@]}"; do
	case " ${all[*]} " in
	*" $s "*) ;;
	*)
		if [ "$s" = watchdog ]; then
			die "no watchdog scenario on $arch: Debian's armmp kernel has no i6300esb driver"
		fi
		die "unknown scenario '$s' (have: ${all[*]})"
		;;
	esac
done
for s in "${tpm_scenarios[@]}"; do
	case " ${all[*]} " in
	*" $s "*) ;;
	*) die "BOARD_TPM names '$s', not a scenario on $arch (have: ${all[*]}; or all, none)" ;;
	esac
done
rm -rf "$work"
mkdir -p "$work/bin"
# The run uses its own copies of both binaries: a rebuild of bin/ while it runs
# (make build in another shell) must not mix versions between scenarios.
cp "$kf" "$work/bin/keyframe"
cp "$kr" "$work/bin/keyframe-receiver"
kr=$work/bin/keyframe-receiver
cp "$guest_bin" "$work/bin/$(basename "$guest_bin")"
kf=$work/bin/keyframe
guest_bin=$work/bin/$(basename "$guest_bin")
kf_keys=$("$kf" config) || die "$kf config failed"
log "keyframe $("$kf" version | sed 's/^keyframe //'), host and guest binaries copied to $work/bin, kernel cache $cache"
[ "$arch" = arm64 ] || log "no watchdog scenario on $arch: Debian's armmp kernel has no i6300esb (no emulated watchdog to test against)"

step "host tools" host_tools
step "fetch kernel" "$here/fetch-kernel.sh" "$arch" "$cache"
# The guest's TPM needs tpm_vtpm_proxy (Debian's arm64 and armmp kernels have it).
if any_tpm && ! modprobe -d "$cache/kernel" -S "$(ls "$cache/kernel/lib/modules")" --show-depends tpm_vtpm_proxy >/dev/null 2>&1; then
	[ -z "${BOARD_TPM+set}" ] || die "BOARD_TPM: the $arch kernel has no tpm_vtpm_proxy: the guest cannot have a TPM"
	log "the $arch kernel has no tpm_vtpm_proxy: the guest cannot have a TPM; every scenario signs with the key file"
	tpm_scenarios=()
fi
if any_tpm; then
	log "device key in the TPM for: $(for s in "${scenarios[@]}"; do uses_tpm "$s" && printf '%s ' "$s"; done)(BOARD_TPM); in a key file for the others"
	step "vtpmfwd" build_guest_tool vtpmfwd
fi
step "camctl" build_guest_tool camctl
if runs m2m; then
	step "fetch vicodec" "$here/fetch-vicodec.sh" "$arch" "$cache"
	if [ -d "$root/board/m2mprobe" ]; then
		step "m2mprobe" build_guest_tool m2mprobe
	else
		log "no board/m2mprobe in this tree: the m2m scenario can only load vicodec and list its nodes, and fails"
	fi
fi
step "CA and certificate" make_pki
! any_tpm || step "swtpm" start_swtpm
step "provision device" provision
step "initramfs" initramfs
for s in "${scenarios[@]}"; do
	step "scenario $s" run_scenario "$s"
done

echo
log "summary (ARCH=$arch, $(nproc) cores; devices: $device_file (key file)${device_tpm:+, $device_tpm (TPM: $(for s in "${scenarios[@]}"; do uses_tpm "$s" && printf '%s ' "$s"; done | sed 's/ $//'))})"
for i in "${!step_names[@]}"; do
	case ${step_names[$i]} in scenario*) continue ;; esac
	printf '  step      %-20s %6ss\n' "${step_names[$i]}" "${step_times[$i]}"
done
fails=0
for r in "${results[@]}"; do
	printf '  scenario  %s\n' "$r"
	case $r in *" FAIL "*) fails=$((fails + 1)) ;; esac
done
printf '  total     %6ss\n' "$(since "$t_total")"
if [ "$fails" -gt 0 ]; then
	log "FAIL: $fails of ${#results[@]} scenarios failed (logs in $work)"
	exit 1
fi
log "PASS: ${#results[@]} scenarios"
