#!/usr/bin/env bash
# usage: mkinitramfs.sh FETCHDIR KEYFRAME_BINARY ETCDIR OUT.cpio.gz [PROGRAM...]
#
# Builds the board test's initramfs: busybox (FETCHDIR/busybox, from
# fetch-kernel.sh), the cross-built keyframe binary as /bin/keyframe, each
# PROGRAM as /bin/NAME (camctl; the TPM forwarder vtpmfwd), init.sh as /init, ETCDIR's
# files as /etc/keyframe (configuration, device key, CA; modes kept), and the
# kernel modules the scenarios load with their dependency closures: vivid,
# virtio_mmio, virtio_net, and i6300esb, tpm_vtpm_proxy and vicodec where the
# kernel has them (vicodec: built by fetch-vicodec.sh into the kernel's extra/).
# Needs kmod (modprobe, depmod) and cpio on the host.
set -euo pipefail

die() { echo "mkinitramfs: $*" >&2; exit 1; }
[ $# -ge 4 ] || die "usage: mkinitramfs.sh FETCHDIR KEYFRAME_BINARY ETCDIR OUT.cpio.gz [PROGRAM...]"
here=$(dirname "$(realpath "$0")")
k=$(realpath "$1/kernel")
bb=$1/busybox/bin/busybox
prog=$2
etc=$3
out=$(realpath -m "$4")
shift 4
progs=("$@")
[ -x "$bb" ] || die "no busybox in $1 (run fetch-kernel.sh)"
[ -x "$prog" ] || die "no keyframe binary $prog (run make cross)"
[ -d "$etc" ] || die "no directory $etc"
kver=$(ls "$k/lib/modules")

st=$(mktemp -d)
trap 'rm -rf "$st"' EXIT
mkdir -p "$st/bin" "$st/etc" "$st/lib/modules/$kver"
install -m755 "$bb" "$st/bin/busybox"
install -m755 "$prog" "$st/bin/keyframe"
for p in "${progs[@]}"; do
	[ -x "$p" ] || die "no program $p"
	install -m755 "$p" "$st/bin/$(basename "$p")"
done
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
mods+=$'\n'
mods+=$(closure tpm_vtpm_proxy 2>/dev/null) || true # the TPM scenarios check for it
mods+=$'\n'
mods+=$(closure vicodec 2>/dev/null) || true # m2m: only when fetch-vicodec.sh built it
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
has() { find "$st/lib/modules" -name "$1.ko*" | grep -q . && echo with || echo without; }
echo "mkinitramfs: $n modules ($(has i6300esb) i6300esb, $(has tpm_vtpm_proxy) tpm_vtpm_proxy, $(has vicodec) vicodec)${progs[*]:+, programs: ${progs[*]##*/}}, $(du -sh "$st" | cut -f1) unpacked, $(du -h "$out" | cut -f1) $out"
