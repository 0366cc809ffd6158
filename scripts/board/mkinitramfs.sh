#!/usr/bin/env bash
# usage: mkinitramfs.sh FETCHDIR KEYFRAME_BINARY ETCDIR OUT.cpio.gz
#
# Builds the board test's initramfs: busybox (FETCHDIR/busybox, from
# fetch-kernel.sh), the cross-built keyframe binary as /bin/keyframe, init.sh as
# /init, ETCDIR's files as /etc/keyframe (configuration, device key, CA; modes
# kept), and the kernel modules the scenarios load with their dependency
# closures: vivid, virtio_mmio, virtio_net, and i6300esb where the kernel has it.
# Needs kmod (modprobe, depmod) and cpio on the host.
set -euo pipefail

die() { echo "mkinitramfs: $*" >&2; exit 1; }
[ $# -eq 4 ] || die "usage: mkinitramfs.sh FETCHDIR KEYFRAME_BINARY ETCDIR OUT.cpio.gz"
here=$(dirname "$(realpath "$0")")
k=$(realpath "$1/kernel")
bb=$1/busybox/bin/busybox
prog=$2
etc=$3
out=$(realpath -m "$4")
[ -x "$bb" ] || die "no busybox in $1 (run fetch-kernel.sh)"
[ -x "$prog" ] || die "no keyframe binary $prog (run make cross)"
[ -d "$etc" ] || die "no directory $etc"
kver=$(ls "$k/lib/modules")

st=$(mktemp -d)
trap 'rm -rf "$st"' EXIT
mkdir -p "$st/bin" "$st/etc" "$st/lib/modules/$kver"
install -m755 "$bb" "$st/bin/busybox"
install -m755 "$prog" "$st/bin/keyframe"
install -m755 "$here/init.sh" "$st/init"
cp -a "$etc" "$st/etc/keyframe"

# Each module and its dependency closure: "modprobe --show-depends" prints one
# "insmod PATH" line per module to load (builtin ones print "builtin NAME").
closure() { modprobe -d "$k" -S "$kver" --show-depends "$1" | awk '$1 == "insmod" { print $2 }'; }
mods=""
for m in vivid virtio_mmio virtio_net; do
	mods+=$(closure "$m") || die "module $m: not in $kver"
	mods+=$'\n'
done
mods+=$(closure i6300esb 2>/dev/null) || true # arm64 only: armmp has no i6300esb
for f in $(echo "$mods" | sort -u); do
	rel=${f#"$k"/}
	mkdir -p "$st/$(dirname "$rel")"
	cp "$f" "$st/$rel"
done
cp "$k/lib/modules/$kver"/modules.builtin* "$k/lib/modules/$kver/modules.order" "$st/lib/modules/$kver/"
depmod -b "$st" "$kver"

(cd "$st" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) | gzip -6 >"$out.tmp"
mv "$out.tmp" "$out"
n=$(find "$st/lib/modules" -name '*.ko*' | wc -l)
echo "mkinitramfs: $n modules ($(find "$st/lib/modules" -name 'i6300esb.ko*' | grep -q . && echo with || echo without) i6300esb), $(du -sh "$st" | cut -f1) unpacked, $(du -h "$out" | cut -f1) $out"
