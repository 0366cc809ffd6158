#!/bin/sh
# The board's part of scripts/board/install-test.sh, run once by
# board-install.service on the emulated Debian board (systemd as PID 1). It does
# what the owner of a camera does after copying the package to it (the files in
# /root/board: the .deb, the receiver's CA, board.env with the receiver's URL):
# install the package, make the device key as the service's user, point the agent
# at the receiver and the camera, restart the service; then it reports what
# systemd says of the service, installs the package again (an upgrade) and
# reports what it kept, then its journal, and powers the board off.
# Every line meant for the host starts with "BOARD: ", "DPKG: " or "AGENT: ".
set -u
# shellcheck source=/dev/null # written by install-test.sh
. /root/board/board.env
say() { echo "BOARD: $*"; }
up() { cut -d' ' -f1 /proc/uptime; }
finish() {
	say "journal of keyframe.service:"
	journalctl -b -u keyframe --no-pager -o short-monotonic | sed 's/^/AGENT: /'
	say "timing $*"
	say "done"
	systemctl --no-block poweroff
	exit 0
}

t_boot=$(up)
say "booted in ${t_boot}s: $(systemctl --version | head -1), kernel $(uname -r), $(systemctl is-system-running)"
say "camera: $(echo /dev/video*) ($(cat /sys/class/video4linux/video0/name 2>/dev/null || echo none))"
say "network: $(ip -4 -o addr show dev eth0 2>/dev/null | awk '{ print $4 }')"

# 1. dpkg -i: the package makes the keyframe user (in video), enables and
# starts keyframe.service with the shipped configuration.
set -- /root/board/keyframe_*.deb
deb=$1
dpkg -i "$deb" 2>&1 | sed 's/^/DPKG: /'
ver=$(dpkg-query -W -f '${Version} ${Architecture} ${db:Status-Abbrev}' keyframe 2>/dev/null)
case $ver in
*" ii ") say "installed keyframe $ver" ;;
*) say "dpkg -i failed: keyframe ${ver:-not installed}"; finish "install failed" ;;
esac
t_inst=$(up)
say "user: $(id keyframe)"
say "after install: keyframe.service $(systemctl is-enabled keyframe) $(systemctl is-active keyframe)"

# 2. The device key, made as the service's user (docs/packages.md), its public
# key for the receiver's operator.
if ! runuser -u keyframe -- keyframe identity -config /etc/keyframe/keyframe.conf -pubout /tmp/device.pub >/tmp/identity.out 2>&1; then
	sed 's/^/BOARD: identity: /' /tmp/identity.out
	finish "identity failed"
fi
say "device $(runuser -u keyframe -- keyframe identity -config /etc/keyframe/keyframe.conf -id)"
say "pubkey $(base64 -w0 /tmp/device.pub)"
# The operator enrols it; the receiver answers once it has (install-test.sh).
# (Records the agent sent before would be refused and quarantined.)
say "waiting for the receiver at $RECEIVER_URL"
i=0
until bash -c "exec 3<>/dev/tcp/10.0.2.2/$RECEIVER_PORT" 2>/dev/null; do
	i=$((i + 1))
	[ "$i" -lt 300 ] || finish "no receiver at $RECEIVER_URL after 300s"
	sleep 1
done
say "the receiver answers after ${i}s"

# 3. The configuration: the receiver and its CA, the camera (vivid: its picture
# made to move, its clock line masked as a user masks a camera's clock).
install -m 0644 /root/board/receiver-ca.pem /etc/keyframe/receiver-ca.pem
cat >>/etc/keyframe/keyframe.conf <<EOF

# Set by the owner after installing:
upload.url = $RECEIVER_URL
upload.ca_file = /etc/keyframe/receiver-ca.pem
capture.source = v4l2
capture.device = /dev/video0
capture.fps = 5
capture.controls = horizontal_movement=6, osd_text_mode=1
motion.mask = 0,0 0.32,0 0.32,0.08 0,0.08
upload.retry_window = 1s
upload.quick_retry = 500ms
upload.backoff_cap = 2s
EOF
systemctl restart keyframe
t_start=$(up)
say "restarted keyframe.service: $(systemctl is-active keyframe)"

# 4. Let it run, then report what systemd says.
sleep "$RUN_SECONDS"
systemctl show keyframe -p ActiveState -p SubState -p User -p Group -p MainPID -p NRestarts -p Result -p StatusErrno |
	sed 's/^/BOARD: show /'
pid=$(systemctl show keyframe -p MainPID --value)
if [ "${pid:-0}" != 0 ] && [ -d "/proc/$pid" ]; then
	say "process user $(stat -c %U "/proc/$pid")"
	say "process groups $(id -nG "$(stat -c %U "/proc/$pid")")"
else
	say "process user none"
fi
t_report=$(up)

# 5. An upgrade: dpkg -i of the package again (prerm upgrade, postinst configure
# with the installed version, as for a newer one). The key, the chain state and
# the owner's configuration stay as they were, the service runs again, and its
# next event continues the chain (a lost chain state would start again at 1,
# which the receiver refuses as a replay).
# starts [JOURNALCTL MATCH]: the sequence numbers of the "event start" lines
# of the service (or of the match, such as _PID=N), oldest first.
starts() {
	[ $# -gt 0 ] || set -- -u keyframe
	journalctl -b "$@" -o cat | sed -n 's/.*msg="event start" .* seq=\([0-9]*\) .*/\1/p'
}
kept() {
	echo "key $(sha256sum /var/lib/keyframe/device.key | cut -c1-16)" \
		"conf $(sha256sum /etc/keyframe/keyframe.conf | cut -c1-16)" \
		"chain $(test -s /var/lib/keyframe/chain && echo present || echo missing)" \
		"device $(runuser -u keyframe -- keyframe identity -id 2>/dev/null)"
}
last=$(starts | tail -1)
say "before upgrade: $(kept) last event seq $last"
dpkg -i "$deb" 2>&1 | sed 's/^/DPKG: /'
say "after upgrade: $(kept)"
# The events of the process the upgrade started (an event the old one began
# after $last was read is not counted as after the upgrade).
pid=$(systemctl show keyframe -p MainPID --value)
i=0
while [ -z "$(starts _PID="$pid")" ] && [ "$i" -lt 90 ]; do
	i=$((i + 1))
	sleep 1
done
say "after upgrade: first event seq $(starts _PID="$pid" | head -1)"
systemctl show keyframe -p ActiveState -p NRestarts | sed 's/^/BOARD: upgraded show /'
finish "boot ${t_boot}s, dpkg -i done at ${t_inst}s, service restarted at ${t_start}s, reported at ${t_report}s, upgraded and reported at $(up)s (uptime)"
