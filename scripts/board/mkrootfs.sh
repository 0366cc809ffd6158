#!/usr/bin/env bash
# usage: mkrootfs.sh ARCH CACHEDIR        (ARCH = arm64 | armhf)
#
# A minimal Debian root file system with systemd for the emulated board of the
# install test (scripts/board/install-test.sh): debootstrap --variant=minbase
# with systemd-sysv, udev, kmod, dbus and iproute2, for ARCH, built on the host
# through qemu-user-static (binfmt_misc). Kept as a tarball in CACHEDIR, keyed by
# suite, architecture, mirror and package list:
#   CACHEDIR/rootfs-SUITE-KEY.tar.gz
# and reused without network access; BOARD_REFRESH=1 builds it again. Prints the
# tarball's path on its last line of stdout.
# Environment: ROOTFS_SUITE (bookworm), ROOTFS_MIRROR (http://deb.debian.org/debian).
# Needs debootstrap, qemu-user-static and a binfmt_misc the host may register
# handlers in (it registers the qemu-user-static ones if they are missing).
set -euo pipefail

die() { echo "mkrootfs: $*" >&2; exit 1; }
[ $# -eq 2 ] || die "usage: mkrootfs.sh arm64|armhf CACHEDIR"
arch=$1
cache=$(realpath -m "$2")
case $arch in
arm64) qarch=aarch64 ;;
armhf) qarch=arm ;;
*) die "unknown ARCH $arch (want arm64 or armhf)" ;;
esac
suite=${ROOTFS_SUITE:-bookworm}
mirror=${ROOTFS_MIRROR:-http://deb.debian.org/debian}
include=systemd-sysv,udev,kmod,dbus,iproute2
# The key changes with anything that changes the tree (bump the trailing
# revision when this script changes what it puts in).
key=$(printf '%s\n' "$suite" "$arch" "$mirror" minbase "$include" rev1 | sha256sum | cut -c1-12)
tarball=$cache/rootfs-$suite-$key.tar.gz

if [ -s "$tarball" ] && [ "${BOARD_REFRESH:-0}" != 1 ]; then
	echo "mkrootfs: cached: $tarball ($(du -h "$tarball" | cut -f1); $suite $arch minbase + $include)" >&2
	echo "$tarball"
	exit 0
fi

for c in debootstrap "qemu-$qarch-static"; do
	command -v "$c" >/dev/null || die "$c is missing (apt-get install debootstrap qemu-user-static)"
done

# binfmt_misc: the handler lets the host run the foreign binaries of the
# chroot (maintainer scripts) through qemu-user-static. qemu-user-static ships
# the registrations with the F flag (the interpreter is opened at
# registration, so the chroot needs no copy of it); outside systemd (a
# container) nothing registers them: do it here.
bm=/proc/sys/fs/binfmt_misc
if [ ! -e "$bm/register" ]; then
	mount -t binfmt_misc binfmt_misc "$bm" 2>/dev/null ||
		die "binfmt_misc is not mounted and cannot be mounted: cannot run $arch binaries on this host"
fi
if [ ! -e "$bm/qemu-$qarch" ]; then
	conf=/usr/lib/binfmt.d/qemu-$qarch.conf
	[ -s "$conf" ] || die "no $conf (qemu-user-static)"
	grep -v '^#' "$conf" | head -1 >"$bm/register" ||
		die "could not register qemu-$qarch in binfmt_misc"
	echo "mkrootfs: registered qemu-$qarch with binfmt_misc" >&2
fi
grep -q '^enabled' "$bm/qemu-$qarch" || die "binfmt_misc handler qemu-$qarch is disabled"

mkdir -p "$cache"
t0=$(date +%s)
dir=$(mktemp -d "$cache/rootfs.XXXXXX")
trap 'rm -rf "$dir"' EXIT
echo "mkrootfs: debootstrap --variant=minbase --include=$include --arch=$arch $suite ($mirror)" >&2
if ! debootstrap --variant=minbase --include="$include" --arch="$arch" \
	"$suite" "$dir/root" "$mirror" >"$dir/debootstrap.log" 2>&1; then
	tail -20 "$dir/debootstrap.log" >&2
	[ ! -f "$dir/root/debootstrap/debootstrap.log" ] || tail -20 "$dir/root/debootstrap/debootstrap.log" >&2
	die "debootstrap failed"
fi
t1=$(date +%s)
# What the board needs of the tree, not of any test: a host name, an empty
# machine-id (systemd makes one at first boot), no apt caches.
echo board >"$dir/root/etc/hostname"
: >"$dir/root/etc/machine-id"
rm -rf "$dir/root/var/cache/apt/archives/"*.deb "$dir/root/var/lib/apt/lists/"*
tar -C "$dir/root" --numeric-owner -czf "$dir/rootfs.tar.gz" . || die "tar failed"
mv "$dir/rootfs.tar.gz" "$tarball"
echo "mkrootfs: built $tarball in $((t1 - t0))s (debootstrap) + $(($(date +%s) - t1))s (tar): $(du -sh "$dir/root" | cut -f1) unpacked, $(du -h "$tarball" | cut -f1)" >&2
echo "$tarball"
