#!/bin/busybox sh
# shellcheck shell=dash
# /init of keyframe's board-test initramfs (scripts/board/mkinitramfs.sh puts it there).
#
# Runs one scenario, chosen on the kernel command line, in an emulated ARM board:
#   keyframe.scenario=motion|still|clip|overlay|camloss|watchdog|nv12|yu12|grey|rgb3|m2m
#                                                      what to run (board-test.sh)
#   keyframe.port=PORT                                 the host receiver's port; the guest
#                                                      reaches the host as 10.0.2.2 only
#   keyframe.tpm=PORT                                  (TPM scenarios) the host swtpm's port:
#                                                      /dev/tpmrm0 comes from tpm_vtpm_proxy
#                                                      and /bin/vtpmfwd relaying to 10.0.2.2:PORT
# /etc/keyframe holds the agent's configuration per scenario (<scenario>.conf), the
# device key, the receiver's CA and board.env (the scenario's durations).
# Every line meant for the host starts with "BOARD: "; the agent's log lines with
# "AGENT: ", the TPM forwarder's with "VTPM: ", m2mprobe's (m2m) with "M2M: ". The last line is
# "BOARD: result PASS|FAIL ..." and the board powers off.

/bin/busybox mkdir -p /proc /sys /dev /run /tmp /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs -o mode=0755 tmpfs /run

say() { echo "BOARD: $*"; }
uptime_s() { cut -d' ' -f1 /proc/uptime; }
RESULT=PASS
REASONS=""
fail() { RESULT=FAIL; REASONS="$REASONS; $*"; say "check failed: $*"; }
finish() {
	agent_stop
	tpm_stats
	say "result $RESULT${REASONS:+ (${REASONS#; })}"
	sync
	poweroff -f
	sleep 5
}

# cmdline VAR: the value of keyframe.VAR= on the kernel command line.
cmdline() { tr ' ' '\n' </proc/cmdline | sed -n "s/^keyframe\.$1=//p" | tail -1; }
SCENARIO=$(cmdline scenario)
PORT=$(cmdline port)
TPM_PORT=$(cmdline tpm)
ETC=/etc/keyframe
CONF=$ETC/$SCENARIO.conf
# shellcheck source=/dev/null # written by board-test.sh
. $ETC/board.env

say "boot scenario=$SCENARIO kernel=$(uname -r) arch=$(uname -m) uptime=$(uptime_s)s"
# The virt machine's PL031 RTC sets the clock at boot (RTC_HCTOSYS): TLS needs a right date.
say "clock $(date -u +%Y-%m-%dT%H:%M:%SZ) epoch=$(date +%s)"

# vivid: one capture-only node, the webcam input first; unplugged with unbind in camloss.
VIVID_ARGS="n_devs=1 node_types=0x1"
VIVID_SYS=/sys/bus/platform/drivers/vivid
camera_load() {
	# shellcheck disable=SC2086 # the module options are separate words
	modprobe vivid $VIVID_ARGS || { fail "modprobe vivid"; return 1; }
	i=0
	while [ ! -e /dev/video0 ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
	[ -e /dev/video0 ] || { fail "no /dev/video0 after modprobe vivid"; return 1; }
}

# The watchdog decides before anything else: a boot caused by it ends the scenario.
WDT=/sys/class/watchdog/watchdog0
if [ "$SCENARIO" = watchdog ]; then
	modprobe i6300esb || fail "modprobe i6300esb"
	if [ -r $WDT/bootstatus ]; then
		BOOTSTATUS=$(cat $WDT/bootstatus)
		say "watchdog $(cat $WDT/identity) bootstatus=$BOOTSTATUS timeout=$(cat $WDT/timeout)s state=$(cat $WDT/state)"
		if [ "$BOOTSTATUS" != 0 ]; then
			say "watchdog reset seen bootstatus=$BOOTSTATUS"
			say "result PASS (this boot was caused by the watchdog)"
			poweroff -f
			sleep 5
		fi
	else
		fail "no $WDT after modprobe i6300esb"
	fi
fi

camera_load
for m in virtio_mmio virtio_net; do modprobe $m || fail "modprobe $m"; done
ip link set lo up
# shellcheck disable=SC2015 # any step failing is a failure
ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 && ip route add default via 10.0.2.2 ||
	fail "network setup"
export KEYFRAME_UPLOAD_URL="https://10.0.2.2:$PORT"

# The TPM: Debian's ARM kernels have no tpm_tis, so QEMU cannot hand the guest an
# emulated TPM chip. tpm_vtpm_proxy lets a program create one: /bin/vtpmfwd makes
# /dev/tpm0 and /dev/tpmrm0 through /dev/vtpmx and relays every command to swtpm on
# the host, where board-test.sh made the device key. Its log goes to the console
# ("VTPM: ") and to /run/vtpmfwd.log.
FWD=""
tpm_start() {
	modprobe tpm_vtpm_proxy || { fail "modprobe tpm_vtpm_proxy"; return 1; }
	mkfifo /run/vtpmfwd.fifo
	(while IFS= read -r l; do
		echo "VTPM: $l"
		echo "$l" >>/run/vtpmfwd.log
	done </run/vtpmfwd.fifo) &
	/bin/vtpmfwd -host "10.0.2.2:$TPM_PORT" >/run/vtpmfwd.fifo 2>&1 &
	FWD=$!
	i=0
	while [ ! -e /dev/tpmrm0 ] && [ $i -lt 200 ] && kill -0 $FWD 2>/dev/null; do sleep 0.1; i=$((i + 1)); done
	if [ ! -e /dev/tpmrm0 ]; then
		fail "no /dev/tpmrm0 from vtpmfwd (forwarder $(kill -0 $FWD 2>/dev/null && echo running || echo exited))"
		return 1
	fi
	say "tpm /dev/tpmrm0 ready: vtpmfwd pid=$FWD relaying to swtpm at 10.0.2.2:$TPM_PORT uptime=$(uptime_s)s"
}
# tpm_stats: what the forwarder relayed (SIGUSR1 makes it log one "relayed" line).
tpm_stats() {
	[ -n "$FWD" ] || return 0
	if ! kill -0 $FWD 2>/dev/null; then
		fail "vtpmfwd exited"
		return 0
	fi
	kill -USR1 $FWD
	i=0
	while ! grep -q 'msg="relayed ' /run/vtpmfwd.log 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
	say "tpm $(grep 'msg="relayed ' /run/vtpmfwd.log | tail -1 | sed 's/.*msg="\(relayed [^"]*\)".*/\1/')"
}
[ -z "$TPM_PORT" ] || tpm_start

KF=/bin/keyframe
say "version $($KF version)"
say "device $($KF identity -config "$CONF" -id)"
# What vivid offers and its controls (the agent logs what it negotiated); the host
# shows the interesting lines, the guest log keeps them all.
$KF probe 2>&1 | sed 's/^/PROBE: /'
say "config $CONF:"
grep -v '^#' "$CONF" | grep . | sed 's/^/BOARD:   /'

AGENT=""
agent_start() {
	mkfifo /run/agent.log
	(while IFS= read -r l; do echo "AGENT: $l"; done </run/agent.log) &
	$KF run -config "$CONF" >/run/agent.log 2>&1 &
	AGENT=$!
	AGENT_T0=$(uptime_s)
	say "agent started pid=$AGENT uptime=${AGENT_T0}s"
}
# agent_alive: the agent runs (a zombie, not yet waited for, counts as exited).
agent_alive() {
	[ -n "$AGENT" ] && [ -r /proc/$AGENT/stat ] || return 1
	read -r _ _ st _ </proc/$AGENT/stat
	[ "$st" != Z ]
}
agent_cpu() { [ -r /proc/$AGENT/stat ] && awk '{printf "%.1fs", ($14 + $15) / 100}' /proc/$AGENT/stat; }
# agent_stop: SIGTERM, wait up to 10 s, print the exit code.
agent_stop() {
	[ -n "$AGENT" ] || return 0
	if agent_alive; then
		say "agent cpu=$(agent_cpu) before stop"
		# From its start to the SIGTERM: the host checks the frame count against it.
		say "agent ran $(awk -v a="$AGENT_T0" -v b="$(uptime_s)" 'BEGIN { printf "%.1f", b - a }')s"
		say "agent sigterm epoch=$(date +%s)"
		kill -TERM "$AGENT"
		i=0
		while agent_alive && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
		agent_alive && { fail "agent ignored SIGTERM for 10 s"; kill -KILL "$AGENT"; }
	fi
	wait "$AGENT"
	say "agent exited rc=$? uptime=$(uptime_s)s"
	AGENT=""
}
# run_for SECONDS: sleep while the agent runs; if it exits, a check fails (once) and
# run_for returns 1 at once.
AGENT_GONE=""
run_for() {
	i=0
	while [ $i -lt "$1" ]; do
		if ! agent_alive; then
			[ -n "$AGENT_GONE" ] || fail "agent exited $i s into a ${1}s phase (uptime $(uptime_s)s)"
			AGENT_GONE=1
			return 1
		fi
		sleep 1
		i=$((i + 1))
	done
}

# cpu_busy: "BUSY TOTAL NCPUS", the guest's CPU time in jiffies (all CPUs) from /proc/stat:
# busy is all but idle and iowait.
cpu_busy() { awk '$1 == "cpu" { t = 0; for (i = 2; i <= NF; i++) t += $i; b = t - $5 - $6 } $1 ~ /^cpu[0-9]/ { n++ } END { print b, t, n }' /proc/stat; }
# cpu_share "BUSY TOTAL NCPUS UPTIME" "BUSY TOTAL NCPUS UPTIME": between the two readings,
# "Ws guest_cpu=P% of N cpus (Bs busy)".
cpu_share() {
	echo "$1 $2" | awk '{ b = $5 - $1; t = $6 - $2; if (t > 0) printf "%.1fs guest_cpu=%.0f%% of %d cpus (%.1fs busy)", $8 - $4, 100 * b / t, $7, b / 100 }'
}
# m2m_run MULTIPLANAR: load vicodec (multiplanar=0|1), find its stateful encoder among
# its three nodes by name (/sys/class/video4linux/*/name) and encode vivid's frames
# with /bin/m2mprobe. Its lines ("M2M: ...") go to the console as they are; the run
# passes if it exits 0 having printed "M2M: PASS". The guest's whole CPU use during
# the run is printed too (vicodec encodes in the kernel, partly in the mem2mem
# framework's worker, which m2mprobe's own CPU figures miss).
m2m_run() {
	mp=$1
	say "m2m run multiplanar=$mp"
	modprobe vicodec multiplanar="$mp" || { fail "modprobe vicodec multiplanar=$mp"; return 1; }
	i=0
	while :; do
		nodes="" enc="" n=0
		for f in /sys/class/video4linux/video*/name; do
			[ -r "$f" ] || continue
			name=$(cat "$f")
			d=${f%/name}
			d=/dev/${d##*/}
			case $name in
			stateful-encoder | stateful-decoder | stateless-decoder)
				[ -e "$d" ] || continue
				nodes="$nodes $d=$name"
				n=$((n + 1))
				;;
			esac
			[ "$name" != stateful-encoder ] || [ ! -e "$d" ] || enc=$d
		done
		if [ "$n" -ge 3 ] || [ $i -ge 50 ]; then break; fi
		sleep 0.1
		i=$((i + 1))
	done
	say "m2m nodes multiplanar=$mp:$nodes"
	[ "$n" = 3 ] || fail "vicodec multiplanar=$mp: $n of its 3 nodes appeared"
	[ -n "$enc" ] || { fail "no stateful-encoder node from vicodec multiplanar=$mp"; return 1; }
	if [ ! -x /bin/m2mprobe ]; then
		fail "no /bin/m2mprobe in the initramfs"
		return 1
	fi
	set -- /bin/m2mprobe -in /dev/video0 -frames "$M2M_FRAMES" -encoder "$enc" -format YU12 -width 640 -height 480 -timeout "${M2M_PROBE_TIMEOUT}s"
	say "m2m running $* (multiplanar=$mp) uptime=$(uptime_s)s"
	c0=$(cpu_busy)
	t0=$(uptime_s)
	rm -f /run/m2m-"$mp".enc
	mkfifo /run/m2m-"$mp".fifo
	# m2mprobe captures all its frames first, then prints its "M2M: encoder=" line and
	# encodes: the guest's CPU is also read at that line, for the encoding alone.
	(while IFS= read -r l; do
		case $l in
		"M2M: encoder="*)
			echo "$(cpu_busy) $(uptime_s)" >/run/m2m-"$mp".enc
			echo "$l"
			;;
		M2M:*) echo "$l" ;;
		*) echo "BOARD: m2mprobe| $l" ;;
		esac
		echo "$l" >>/run/m2m-"$mp".log
	done </run/m2m-"$mp".fifo) &
	reader=$!
	timeout "$M2M_TIMEOUT" "$@" >/run/m2m-"$mp".fifo 2>&1
	rc=$?
	wait $reader
	c1="$(cpu_busy) $(uptime_s)"
	enc_cpu=""
	[ ! -s /run/m2m-"$mp".enc ] || enc_cpu=" encoding: $(cpu_share "$(cat /run/m2m-"$mp".enc)" "$c1")"
	say "m2m done multiplanar=$mp rc=$rc whole run: $(cpu_share "$c0 $t0" "$c1")$enc_cpu"
	[ "$rc" = 0 ] || fail "m2mprobe multiplanar=$mp exited with $rc (killed if it ran ${M2M_TIMEOUT}s)"
	grep -q '^M2M: PASS' /run/m2m-"$mp".log || fail "m2mprobe multiplanar=$mp did not print M2M: PASS"
}

case $SCENARIO in
motion)
	agent_start
	run_for "$RUN_SECONDS" && say "$SCENARIO ran ${RUN_SECONDS}s"
	;;
still | overlay)
	agent_start
	run_for "$RUN_SECONDS" || finish
	say "$SCENARIO ran ${RUN_SECONDS}s"
	# The canary: the picture moves for the last CANARY_SECONDS, set by another
	# program while the agent captures; that event must reach the receiver.
	say "canary epoch=$(date +%s) uptime=$(uptime_s)s: vivid's picture moves ($CANARY_CONTROLS)"
	# shellcheck disable=SC2086 # one argument per control
	out=$(camctl -device /dev/video0 $CANARY_CONTROLS 2>&1) || fail "camctl: $out"
	say "$out"
	run_for "$CANARY_SECONDS" && say "$SCENARIO canary ran ${CANARY_SECONDS}s"
	;;
clip)
	# An event with its run-up: CLIP_STILL_SECONDS of still picture (longer than
	# motion.pre_roll), then the picture moves, then it is still again, long
	# enough for the event to end and its last segments and end record to be
	# uploaded while the agent still runs.
	agent_start
	run_for "$CLIP_STILL_SECONDS" || finish
	say "clip move epoch=$(date +%s) uptime=$(uptime_s)s: vivid's picture moves ($CANARY_CONTROLS)"
	# shellcheck disable=SC2086 # one argument per control
	out=$(camctl -device /dev/video0 $CANARY_CONTROLS 2>&1) || fail "camctl: $out"
	say "$out"
	run_for "$CLIP_MOVE_SECONDS" || finish
	say "clip stop epoch=$(date +%s) uptime=$(uptime_s)s: vivid's picture stops ($STOP_CONTROLS)"
	# shellcheck disable=SC2086 # one argument per control
	out=$(camctl -device /dev/video0 $STOP_CONTROLS 2>&1) || fail "camctl: $out"
	say "$out"
	run_for "$CLIP_REST_SECONDS" && say "$SCENARIO ran ${CLIP_STILL_SECONDS}s still, ${CLIP_MOVE_SECONDS}s moving, ${CLIP_REST_SECONDS}s still"
	;;
nv12 | yu12 | grey | rgb3)
	agent_start
	run_for "$FORMAT_SECONDS" && say "$SCENARIO ran ${FORMAT_SECONDS}s"
	;;
camloss)
	agent_start
	run_for "$LOSS_AFTER"
	say "camloss unplug epoch=$(date +%s) uptime=$(uptime_s)s"
	echo vivid.0 >$VIVID_SYS/unbind || fail "unbind vivid.0"
	run_for "$LOSS_SECONDS"
	# The agent must let go of the dead node: then the module can be unloaded, and
	# the camera that comes back is a new device (controls at their defaults) that
	# the agent has to open and set up again.
	i=0
	until rmmod vivid 2>/dev/null; do
		i=$((i + 1))
		if [ $i -ge "$RELEASE_SECONDS" ]; then
			fail "the agent still held the unplugged camera ${RELEASE_SECONDS}s after rmmod was first tried"
			break
		fi
		sleep 1
	done
	if [ -e $VIVID_SYS ]; then
		say "camloss rebinding vivid.0 (module still in use)"
		echo vivid.0 >$VIVID_SYS/bind
	else
		say "camloss rmmod vivid ok after $((LOSS_SECONDS + i))s"
		camera_load
	fi
	say "camloss camera back epoch=$(date +%s) uptime=$(uptime_s)s nodes=$(echo /dev/video*)"
	if agent_alive; then
		say "camloss agent survived the camera loss"
		run_for "$AFTER_SECONDS" && say "camloss ran ${AFTER_SECONDS}s after the camera came back"
	else
		fail "agent exited during the camera loss"
	fi
	;;
watchdog)
	[ -r $WDT/state ] || finish
	agent_start
	run_for 2 || finish
	say "watchdog armed state=$(cat $WDT/state) timeout=$(cat $WDT/timeout)s"
	[ "$(cat $WDT/state)" = active ] || fail "the agent did not start the watchdog (state $(cat $WDT/state))"
	run_for $((HEALTHY_SECONDS - 2)) || finish
	say "watchdog healthy ${HEALTHY_SECONDS}s without reset state=$(cat $WDT/state) timeout=$(cat $WDT/timeout)s"
	[ "$RESULT" = PASS ] || finish
	say "watchdog stalling the pipeline: unbind vivid.0 epoch=$(date +%s) uptime=$(uptime_s)s"
	echo vivid.0 >$VIVID_SYS/unbind || fail "unbind vivid.0"
	# The watchdog should reset the board now; reaching the end of this sleep is a
	# failure. Until then the agent must live: the pipeline stalls, the process
	# does not (a crashed agent leaves the watchdog running too).
	i=0
	while [ $i -lt "$STALL_WAIT_SECONDS" ]; do
		sleep 1
		i=$((i + 1))
		if agent_alive; then
			say "watchdog stalled ${i}s, agent alive"
		elif [ -z "$AGENT_GONE" ]; then
			AGENT_GONE=1
			fail "agent exited ${i}s after the stall, before the watchdog reset"
		fi
	done
	fail "no watchdog reset ${STALL_WAIT_SECONDS}s after the stall"
	;;
m2m)
	# The stateful memory-to-memory encoder: vicodec (built out of tree by
	# fetch-vicodec.sh) encodes vivid's frames through /bin/m2mprobe, once with
	# the single-planar API and once with the multi-planar one. No agent runs.
	m2m_run 0
	if [ -e /sys/module/vicodec/parameters/multiplanar ]; then
		rmmod vicodec || fail "rmmod vicodec after the single-planar run"
		m2m_run 1
	else
		say "m2m vicodec has no multiplanar parameter: single-planar only"
	fi
	;;
*)
	fail "unknown scenario '$SCENARIO'"
	;;
esac
finish
