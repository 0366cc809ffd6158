#!/usr/bin/env bash
# usage: [ARCH=arm64] scripts/board/install-test.sh [DEB]
#
# The Debian package installed as a user installs it, on an emulated ARM board:
# QEMU's "virt" machine (TCG) boots Debian's own kernel (fetch-kernel.sh, cached)
# into a minimal Debian root file system with systemd (mkrootfs.sh: debootstrap,
# cached as a tarball), on a virtio disk made for this run. On the board, a oneshot
# unit (board-install.service) does what the owner does:
#
#   dpkg -i keyframe_VERSION_ARCH.deb            the package makes the keyframe user,
#                                                enables and starts keyframe.service
#   sudo -u keyframe keyframe identity -pubout   the device key, as the service's user;
#                                                its public key goes to the receiver's
#                                                operator (here: over the console)
#   edit /etc/keyframe/keyframe.conf             upload.url, upload.ca_file (the
#                                                receiver's CA), the camera
#   systemctl restart keyframe
#
# The camera is vivid (loaded at boot by systemd-modules-load, as a camera's driver
# would be). On the host, a receiver with its own CA (-tls self, a certificate for
# 10.0.2.2, which QEMU maps to the host's loopback) enrols the printed key (the
# operator's `keyframe-receiver enroll`) and must verify an event (a "start"
# record) signed by that key. The board then reports `systemctl show keyframe`:
# the test passes only if the service is active, runs as User=keyframe (and its
# process belongs to keyframe), and the receiver verified the event. The
# service's journal is printed in every case.
#
# DEB defaults to dist/keyframe_*_ARCH.deb (make dist). Needs bin/keyframe-receiver
# (make build). Installs qemu-system-arm, kmod, cpio, e2fsprogs, debootstrap and
# qemu-user-static with apt-get if missing. Caches in ~/.cache/keyframe/board/ARCH
# (BOARD_CACHE): the kernel and rootfs-SUITE-KEY.tar.gz. Each run's files are in
# bin/board-install/ARCH (BOARD_WORK). Durations: INSTALL_RUN_SECONDS (60, the
# agent's run after the restart), INSTALL_TIMEOUT (900, the whole boot).
# Details: docs/board-test.md.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
here=$root/scripts/board
arch=${ARCH:-arm64}
kr=$root/bin/keyframe-receiver
work=${BOARD_WORK:-$root/bin/board-install/$arch}
cache=${BOARD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/keyframe/board/$arch}
run_seconds=${INSTALL_RUN_SECONDS:-60}
limit=${INSTALL_TIMEOUT:-900}
case $arch in
arm64)
	qemu_bin="qemu-system-aarch64"
	qemu=(qemu-system-aarch64 -M virt -cpu cortex-a53)
	;;
armhf)
	qemu_bin="qemu-system-arm"
	qemu=(qemu-system-arm -M "virt,highmem=off" -cpu cortex-a15)
	;;
*)
	echo "install-test: unknown ARCH '$arch' (arm64 or armhf)" >&2
	exit 2
	;;
esac
deb=${1:-}
if [ -z "$deb" ]; then
	for f in "$root"/dist/keyframe_*_"$arch".deb; do [ -f "$f" ] && deb=$f; done
fi

prog="install-test[$arch]"
# shellcheck source=scripts/board/steps.sh
. "$root/scripts/board/steps.sh"
t_total=$(now)

if [ -z "$deb" ] || [ ! -f "$deb" ]; then die "no keyframe package for $arch (run make dist, or name the .deb)"; fi
[ -x "$kr" ] || die "no $kr: run make build"
[ "$(id -u)" = 0 ] || die "must run as root (debootstrap, binfmt_misc, the root file system's owners)"

host_tools() {
	local need=()
	command -v "$qemu_bin" >/dev/null || need+=(qemu-system-arm)
	command -v depmod >/dev/null || need+=(kmod)
	command -v cpio >/dev/null || need+=(cpio)
	command -v mke2fs >/dev/null || need+=(e2fsprogs)
	command -v debootstrap >/dev/null || need+=(debootstrap)
	case $arch in
	arm64) command -v qemu-aarch64-static >/dev/null || need+=(qemu-user-static) ;;
	armhf) command -v qemu-arm-static >/dev/null || need+=(qemu-user-static) ;;
	esac
	if [ ${#need[@]} -eq 0 ]; then
		log "host tools present: $("$qemu_bin" --version | head -1), debootstrap $(dpkg-query -W -f '${Version}' debootstrap 2>/dev/null || echo '?')"
		return
	fi
	log "installing ${need[*]} (apt-get update first)"
	apt-get -qq update || die "apt-get update failed"
	apt-get -qq -o DPkg::Lock::Timeout=600 install -y --no-install-recommends "${need[@]}" >/dev/null ||
		die "could not install ${need[*]}"
}

# --- the receiver -----------------------------------------------------------------
# A receiver with its own CA (as at home: -tls self), a certificate for 10.0.2.2
# (the guest's name for the host's loopback), on a free port of 127.0.0.1. It is
# started twice: once before the boot, to make its CA (which goes onto the board
# with the package), and again, on the same port, once the board's key is
# enrolled: the board waits for that port to answer before it points the agent at
# it, as an owner would wait for the operator.
recv_pid=""
recv_port=""
# start_receiver [PORT]: on PORT, or on a free port.
start_receiver() {
	local d=$work/receiver try port i
	mkdir -p "$d"
	for try in 1 2 3 4 5; do
		port=${1:-$((20000 + RANDOM % 30000))}
		if [ -z "${1:-}" ] && (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then continue; fi
		"$kr" -data "$d/data" -listen "127.0.0.1:$port" -tls self -tls-names 10.0.2.2,127.0.0.1 \
			>>"$d/stdout" 2>>"$d/stderr" &
		recv_pid=$!
		for i in $(seq 150); do
			grep -q "listening on https://127.0.0.1:$port/" "$d/stdout" 2>/dev/null && break
			kill -0 "$recv_pid" 2>/dev/null || break
			sleep 0.1
		done
		if kill -0 "$recv_pid" 2>/dev/null && grep -q "listening on https://127.0.0.1:$port/" "$d/stdout"; then
			recv_port=$port
			[ -s "$d/data/tls/ca.pem" ] || die "the receiver made no CA in $d/data/tls/ca.pem"
			log "receiver pid $recv_pid on https://127.0.0.1:$port/ (guest: https://10.0.2.2:$port/), its own CA $d/data/tls/ca.pem"
			return 0
		fi
		log "receiver on port $port did not start (try $try): $(tail -1 "$d/stderr")"
		kill "$recv_pid" 2>/dev/null || true
		wait "$recv_pid" 2>/dev/null || true
		recv_pid=""
		[ -z "${1:-}" ] || break
	done
	die "no receiver could be started${1:+ on port $1}"
}
# make_ca: the receiver's first start makes its CA and certificate; then it stops.
make_ca() {
	start_receiver
	stop_receiver
	: >"$work/receiver/stdout"
}
stop_receiver() {
	[ -n "$recv_pid" ] || return 0
	kill -TERM "$recv_pid" 2>/dev/null || true
	wait "$recv_pid" 2>/dev/null || true
	recv_pid=""
}
qemu_pid=""
cleanup() {
	[ -z "$qemu_pid" ] || kill "$qemu_pid" 2>/dev/null || true
	stop_receiver
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- the board's disk ----------------------------------------------------------------
kver=""
# copy_modules DEST MODULE...: each module's closure from the cached kernel into
# DEST/lib/modules/KVER, and DEST's modules.dep (as the kernel's modules package
# would have put them there; only what this board uses, to keep the disk small).
copy_modules() {
	local dest=$1 k=$cache/kernel m f rel mods=""
	shift
	for m in "$@"; do
		mods+=$(modprobe -d "$k" -S "$kver" --show-depends "$m" | awk '$1 == "insmod" { print $2 }') ||
			die "module $m: not in $kver"
		mods+=$'\n'
	done
	for f in $(echo "$mods" | sort -u); do
		rel=${f#"$k"/}
		mkdir -p "$dest/$(dirname "$rel")"
		cp "$f" "$dest/$rel"
	done
	cp "$k/lib/modules/$kver"/modules.builtin* "$k/lib/modules/$kver/modules.order" "$dest/lib/modules/$kver/"
	depmod -b "$dest" "$kver"
}

# initramfs: busybox, the modules to reach the disk, and an /init that mounts
# /dev/vda and hands over to systemd (Debian's kernel has virtio_blk and ext4
# as modules).
initramfs() {
	local st=$work/initramfs
	rm -rf "$st"
	mkdir -p "$st/bin" "$st/newroot" "$st/proc" "$st/sys" "$st/dev"
	install -m755 "$cache/busybox/bin/busybox" "$st/bin/busybox"
	copy_modules "$st" virtio_mmio virtio_blk crc32c_generic ext4
	cat >"$st/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in virtio_mmio virtio_blk crc32c_generic ext4; do modprobe "$m" || echo "initramfs: modprobe $m failed"; done
i=0
while [ ! -b /dev/vda ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
mount -t ext4 -o rw /dev/vda /newroot || { echo "initramfs: cannot mount /dev/vda"; poweroff -f; }
umount /proc /sys
mount --move /dev /newroot/dev
exec switch_root /newroot /sbin/init
EOF
	chmod 755 "$st/init"
	(cd "$st" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) | gzip -6 >"$work/initrd.cpio.gz"
	log "initramfs: $(du -h "$work/initrd.cpio.gz" | cut -f1)"
}

# disk TARBALL: the cached root file system, the kernel's modules the board
# uses, the package, the board's own configuration (network, vivid, the test's
# oneshot unit) as an ext4 image.
disk() {
	local r=$work/root
	rm -rf "$r"
	mkdir -p "$r"
	tar -C "$r" --numeric-owner -xzf "$1"
	copy_modules "$r" vivid virtio_net virtio_mmio virtio_blk crc32c_generic ext4 autofs4

	# The network: QEMU's user-mode network, the host as 10.0.2.2.
	mkdir -p "$r/etc/systemd/network" "$r/etc/systemd/system/multi-user.target.wants" \
		"$r/etc/systemd/system/sockets.target.wants" "$r/etc/systemd/system/network-online.target.wants"
	printf '[Match]\nName=eth0\n\n[Network]\nAddress=10.0.2.15/24\nGateway=10.0.2.2\n' >"$r/etc/systemd/network/10-eth0.network"
	ln -sf /lib/systemd/system/systemd-networkd.service "$r/etc/systemd/system/multi-user.target.wants/"
	ln -sf /lib/systemd/system/systemd-networkd.socket "$r/etc/systemd/system/sockets.target.wants/"
	ln -sf /lib/systemd/system/systemd-networkd-wait-online.service "$r/etc/systemd/system/network-online.target.wants/"
	# Nothing logs in on the console; its lines are for the host.
	ln -sf /dev/null "$r/etc/systemd/system/serial-getty@ttyAMA0.service"
	printf '/dev/vda / ext4 rw 0 0\n' >"$r/etc/fstab"

	# The camera: vivid with one capture node, loaded at boot as a camera's driver is.
	mkdir -p "$r/etc/modules-load.d" "$r/etc/modprobe.d"
	echo vivid >"$r/etc/modules-load.d/vivid.conf"
	echo "options vivid n_devs=1 node_types=0x1" >"$r/etc/modprobe.d/vivid.conf"

	# What the owner brings: the package, the receiver's address and CA.
	mkdir -p "$r/root/board"
	cp "$deb" "$r/root/board/"
	cp "$work/receiver/data/tls/ca.pem" "$r/root/board/receiver-ca.pem"
	cat >"$r/root/board/board.env" <<EOF
RECEIVER_URL=https://10.0.2.2:$recv_port
RECEIVER_PORT=$recv_port
RUN_SECONDS=$run_seconds
EOF
	install -m755 "$here/install-board.sh" "$r/root/board/install-board.sh"
	cat >"$r/etc/systemd/system/board-install.service" <<'EOF'
[Unit]
Description=keyframe install test: install the package as its owner would
Wants=network-online.target
After=network-online.target systemd-modules-load.service systemd-udev-settle.service

[Service]
Type=oneshot
ExecStart=/root/board/install-board.sh
StandardOutput=journal+console
StandardError=journal+console

[Install]
WantedBy=multi-user.target
EOF
	ln -sf /etc/systemd/system/board-install.service "$r/etc/systemd/system/multi-user.target.wants/"

	local size
	size=$(du -sm "$r" | cut -f1)
	rm -f "$work/disk.img"
	mke2fs -q -t ext4 -L board -d "$r" "$work/disk.img" "$((size + 512))M" || die "mke2fs failed"
	log "disk: $(du -sh "$r" | cut -f1) in a $((size + 512)) MiB ext4 image (sparse)"
	rm -rf "$r"
}

# --- the boot ----------------------------------------------------------------------
reasons=()
device=""
boot() {
	local glog=$work/guest.log q0 qrc=0 pub enrolled="" first=""
	q0=$(date +%s)
	timeout -k 5 "$limit" "${qemu[@]}" -smp 2 -m 1024 -nographic -no-reboot \
		-kernel "$(ls "$cache"/kernel/boot/vmlinuz-*)" -initrd "$work/initrd.cpio.gz" \
		-append "console=ttyAMA0 rdinit=/init panic=-1" \
		-drive "file=$work/disk.img,format=raw,if=none,id=hd0" -device virtio-blk-device,drive=hd0 \
		-netdev user,id=n0 -device virtio-net-device,netdev=n0 \
		</dev/null >"$glog" 2>&1 &
	qemu_pid=$!
	# The operator's part: the device's public key, printed by the board, is
	# enrolled (and paired to an owner) at the receiver.
	while kill -0 "$qemu_pid" 2>/dev/null; do
		if [ -z "$enrolled" ] && pub=$(sed -n 's/^.*BOARD: pubkey \([A-Za-z0-9+/=]*\).*/\1/p' "$glog" 2>/dev/null | head -1) && [ -n "$pub" ]; then
			base64 -d <<<"$pub" >"$work/device.pub" || die "the board's public key is not base64"
			device=$("$kr" enroll -data "$work/receiver/data" -key "$work/device.pub" -owner board | head -1) ||
				die "keyframe-receiver enroll refused the board's key"
			log "enrolled the board's key at the receiver after $(($(date +%s) - q0))s: device ${device:-?}"
			enrolled=1
			start_receiver "$recv_port"
		fi
		if [ -n "$enrolled" ] && [ -z "$first" ] && grep -q '^verified .* kind=start ' "$work/receiver/stdout"; then
			first=$(($(date +%s) - q0))
			log "the receiver verified the board's first event ${first}s after the board was started"
		fi
		sleep 1
	done
	wait "$qemu_pid" || qrc=$?
	qemu_pid=""
	# The board's own lines, without the console's "[ uptime] unit[pid]: " prefix.
	tr -d '\r' <"$glog" >"$glog.tmp" && mv "$glog.tmp" "$glog"
	sed -n 's/^\(\[ *[0-9.]*\] [^ :]*\[[0-9]*\]: \)\{0,1\}\(\(BOARD\|DPKG\|AGENT\): \)/\2/p' "$glog" >"$work/board.log"
	log "qemu ran $(($(date +%s) - q0))s${first:+; first event verified after ${first}s}"
	case $qrc in
	0) ;;
	124) reasons+=("qemu ran into the ${limit}s timeout (INSTALL_TIMEOUT)") ;;
	*) reasons+=("qemu exited with $qrc") ;;
	esac
	[ -n "$enrolled" ] || reasons+=("the board printed no public key")
}

check() {
	local glog=$work/board.log d=$work/receiver verified n_start n_dev gdev user pid_user active restarts
	[ -z "$device" ] || kill -0 "$recv_pid" 2>/dev/null || reasons+=("the receiver died during the run (see $d/stderr)")
	stop_receiver
	sed 's/^/  board| /' "$glog"
	verified=$(grep '^verified ' "$d/stdout" || true)
	# shellcheck disable=SC2001 # one prefix per line
	[ -z "$verified" ] || sed 's/^/  receiver| /' <<<"$verified"
	gdev=$(sed -n 's/^BOARD: device \([a-z0-9]*\)$/\1/p' "$glog" | tail -1)
	[ -n "$gdev" ] || reasons+=("the board printed no device ID")
	[ -z "$device" ] || [ "$gdev" = "$device" ] || reasons+=("the board's device $gdev is not the one enrolled ($device)")
	device=${device:-$gdev}
	n_dev=$(grep -c " device=$device " <<<"$verified" || true)
	n_start=$(grep " device=$device " <<<"$verified" | grep " kind=start " | grep -c " source=v4l2" || true)
	[ "$n_start" -ge 1 ] || reasons+=("the receiver verified no event (kind=start, source=v4l2) from device $device ($n_dev records)")
	[ "$(grep -vc " device=$device " <<<"$verified" | tr -d ' ')" -eq 0 ] || [ -z "$verified" ] ||
		reasons+=("records verified from another device")
	user=$(sed -n 's/^BOARD: show User=//p' "$glog" | tail -1)
	active=$(sed -n 's/^BOARD: show ActiveState=//p' "$glog" | tail -1)
	pid_user=$(sed -n 's/^BOARD: process user \(.*\)$/\1/p' "$glog" | tail -1)
	[ "$user" = keyframe ] || reasons+=("systemctl show keyframe: User='$user', want keyframe")
	[ "$active" = active ] || reasons+=("systemctl show keyframe: ActiveState='$active', want active")
	[ "$pid_user" = keyframe ] || reasons+=("the service's main process runs as '$pid_user', want keyframe")
	# More than WatchdogSec (60s) after the restart and never restarted: the
	# keepalives (sd_notify WATCHDOG=1) came.
	restarts=$(sed -n 's/^BOARD: show NRestarts=//p' "$glog" | tail -1)
	[ "$restarts" = 0 ] || reasons+=("systemctl show keyframe: NRestarts='$restarts', want 0")
	# The upgrade (dpkg -i again) kept the key, the configuration and the chain:
	# the next event's start record continues the sequence and is verified.
	local before after seq_before seq_after
	before=$(sed -n 's/^BOARD: before upgrade: \(.*\) last event seq .*/\1/p' "$glog" | tail -1)
	seq_before=$(sed -n 's/^BOARD: before upgrade: .* last event seq \([0-9]*\)$/\1/p' "$glog" | tail -1)
	after=$(sed -n 's/^BOARD: after upgrade: \(key .*\)$/\1/p' "$glog" | tail -1)
	seq_after=$(sed -n 's/^BOARD: after upgrade: first event seq \([0-9]*\)$/\1/p' "$glog" | tail -1)
	if [ -z "$before" ] || [ "$before" != "$after" ]; then
		reasons+=("the upgrade changed what it must keep: before '$before', after '$after'")
	elif [[ $before != *"chain present"* ]]; then
		reasons+=("no chain state before the upgrade: $before")
	fi
	if [ -z "$seq_after" ] || [ -z "$seq_before" ] || [ "$seq_after" -le "$seq_before" ]; then
		reasons+=("after the upgrade no event continued the chain (last seq before ${seq_before:-none}, first after ${seq_after:-none})")
	elif ! grep " device=$device " <<<"$verified" | grep " kind=start " | grep -q " seq=$seq_after "; then
		reasons+=("the receiver did not verify the start record seq=$seq_after made after the upgrade")
	fi
	[ "$(sed -n 's/^BOARD: upgraded show ActiveState=//p' "$glog" | tail -1)" = active ] ||
		reasons+=("keyframe.service is not active after the upgrade")
	grep -q '^BOARD: installed keyframe ' "$glog" || reasons+=("dpkg -i did not install the package")
	grep -q '^BOARD: done' "$glog" || reasons+=("the board did not finish its part")
	log "device $device: $n_dev records verified, $n_start events (kind=start, source=v4l2); service User=$user, ActiveState=$active, NRestarts=$restarts, process user $pid_user; upgrade kept $after, events seq ${seq_before:-?} then ${seq_after:-?}"
}

# --- main ----------------------------------------------------------------------------
rm -rf "$work"
mkdir -p "$work/bin"
cp "$kr" "$work/bin/keyframe-receiver"
kr=$work/bin/keyframe-receiver
log "package $(basename "$deb") ($(stat -c %s "$deb") bytes), receiver $("$kr" version 2>/dev/null || echo '?'), cache $cache"
step "host tools" host_tools
step "fetch kernel" "$here/fetch-kernel.sh" "$arch" "$cache"
kver=$(ls "$cache/kernel/lib/modules")
rootfs=""
mk_rootfs() { rootfs=$("$here/mkrootfs.sh" "$arch" "$cache" | tail -1); }
step "root file system" mk_rootfs
step "receiver CA" make_ca
step "initramfs" initramfs
step "disk" disk "$rootfs"
step "boot, install, run" boot
check

echo
log "summary (ARCH=$arch, $(nproc) cores)"
for i in "${!step_names[@]}"; do
	printf '  step  %-20s %6ss\n' "${step_names[$i]}" "${step_times[$i]}"
done
b=$(sed -n 's/^BOARD: timing \(.*\)$/\1/p' "$work/board.log" | tail -1)
[ -z "$b" ] || printf '  board %s\n' "$b"
printf '  total %6ss\n' "$(since "$t_total")"
if [ ${#reasons[@]} -gt 0 ]; then
	# The board's journal of the service is in board.log (above) when it got that
	# far; the console's end says where it stopped otherwise.
	log "the board's console, last 40 lines ($work/guest.log):"
	tail -40 "$work/guest.log" | sed 's/^/  console| /'
	log "FAIL: $(printf '%s; ' "${reasons[@]}" | sed 's/; $//') (logs in $work: guest.log, receiver/)"
	exit 1
fi
log "PASS: installed $(basename "$deb"), keyframe.service runs as keyframe, the receiver verified its event"
