#!/usr/bin/env bash
# usage: fetch-vicodec.sh ARCH FETCHDIR        (ARCH = arm64 | armhf)
#
# Builds the kernel's vicodec driver (the virtual FWHT codec: the reference
# stateful V4L2 memory-to-memory encoder and decoder) as an out-of-tree module
# for exactly the kernel fetch-kernel.sh fetched into FETCHDIR, and installs it
# into that kernel's module tree (lib/modules/VERSION/extra/vicodec.ko, depmod),
# where mkinitramfs.sh's module closure finds it with its dependencies
# (v4l2-mem2mem, videobuf2-vmalloc, ...). Debian's arm64 kernel builds vivid but
# not vicodec (CONFIG_VIDEO_VICODEC is not set), nor does its armmp kernel.
#
# What it takes, all of the kernel's own version (the kernel package's, read from
# FETCHDIR/ok), through the same private apt state as the kernel (FETCHDIR/lists):
#   linux-source-6.1                 only drivers/media/test-drivers/vicodec is unpacked
#   linux-headers-VERSION-arm64      the kernel's configuration and Module.symvers
#                                    (armhf: linux-headers-VERSION-armmp)
#   linux-headers-VERSION-common     (its dependency: the headers themselves)
#   linux-kbuild-6.1                 for the host's architecture (fixdep, modpost): from
#                                    a private apt state for it, its lists thrown away after
# and the cross compiler the headers' Makefile names (.kernelvariables: CC =
# $(CROSS_COMPILE)gcc-12, the compiler the kernel was built with): from
# gcc-aarch64-linux-gnu (armhf: gcc-arm-linux-gnueabihf), installed on the host by
# board-test.sh.
#
# The module is cached in FETCHDIR/vicodec/KERNELVERSION_PACKAGEVERSION: a kernel
# that fetch-kernel.sh refreshed gets a new build, a cached one is only installed
# again (no network). The packages (about 150 MB, most of it linux-source) are
# deleted after the build.
set -euo pipefail

die() { echo "fetch-vicodec: $*" >&2; exit 1; }
[ $# -eq 2 ] || die "usage: fetch-vicodec.sh arm64|armhf FETCHDIR"
arch=$1
out=$(realpath -m "$2")
case $arch in
arm64) cross=aarch64-linux-gnu- kernel_arch=arm64 gcc_pkg=gcc-aarch64-linux-gnu ;;
armhf) cross=arm-linux-gnueabihf- kernel_arch=arm gcc_pkg=gcc-arm-linux-gnueabihf ;;
*) die "unknown ARCH $arch (want arm64 or armhf)" ;;
esac
k=$out/kernel
if [ ! -s "$out/ok" ] || [ ! -d "$k/lib/modules" ]; then
	die "no kernel in $out (run fetch-kernel.sh $arch $out)"
fi
kabi=$(ls "$k/lib/modules")
[ "$(echo "$kabi" | wc -l)" = 1 ] || die "more than one kernel in $k/lib/modules: $kabi"
# FETCHDIR/ok: "linux-image-KABI VERSION (KABI), busybox-static_..."
read -r kpkg kver _ <"$out/ok"
[ "$kpkg" = "linux-image-$kabi" ] || die "$out/ok names $kpkg, but the kernel unpacked is $kabi"
key=${kabi}_$kver
cache=$out/vicodec/$key
ko=$cache/vicodec.ko
for c in depmod modinfo; do
	command -v "$c" >/dev/null || die "$c is missing (apt-get install kmod)"
done

# vicodec selects V4L2_MEM2MEM_DEV and VIDEOBUF2_VMALLOC: the kernel must have them.
config=$k/boot/config-$kabi
for opt in CONFIG_V4L2_MEM2MEM_DEV CONFIG_VIDEOBUF2_VMALLOC CONFIG_VIDEO_DEV; do
	grep -Eq "^$opt=[ym]$" "$config" || die "$kabi has no $opt (vicodec needs it): $(grep "${opt}[= ]" "$config" || echo "not in $config")"
done

# install: vicodec.ko into the kernel's extra/ and depmod, unless it is there already.
install_ko() {
	local dst=$k/lib/modules/$kabi/extra/vicodec.ko
	if ! cmp -s "$ko" "$dst" || ! grep -q '^extra/vicodec.ko:' "$k/lib/modules/$kabi/modules.dep"; then
		mkdir -p "$(dirname "$dst")"
		cp "$ko" "$dst"
		depmod -b "$k" "$kabi"
	fi
	local deps
	deps=$(modprobe -d "$k" -S "$kabi" --show-depends vicodec | awk '$1 == "insmod" { n = split($2, p, "/"); sub(/\.ko.*/, "", p[n]); printf "%s ", p[n] }')
	echo "fetch-vicodec: $(cat "$cache/ok"); installed in $kabi/extra, loads: ${deps% }"
}

if [ -s "$cache/ok" ] && [ -s "$ko" ]; then
	install_ko
	exit 0
fi

for c in apt-get apt-cache dpkg-deb make xz "${cross}strip"; do
	command -v "$c" >/dev/null || die "$c is missing (apt-get install --no-install-recommends $gcc_pkg make xz-utils)"
done

retry() {
	local i
	for i in 1 2 3; do
		"$@" && return 0
		echo "fetch-vicodec: failed (try $i/3): $*" >&2
		[ "$i" = 3 ] || sleep 3
	done
	return 1
}

t0=$(date +%s)
tmp=$out/vicodec/build.tmp
rm -rf "$tmp"
mkdir -p "$tmp/debs" "$tmp/apt-cache/archives/partial" "$tmp/root"
trap 'rm -rf "$tmp"' EXIT
# The kernel's own lists (fetch-kernel.sh's private state for ARCH): they named
# this kernel version, so they name its headers and source too.
apt=(-q -oAPT::Architecture="$arch" -oAPT::Architectures="$arch"
	-oDir::State::Lists="$out/lists" -oDir::Cache="$tmp/apt-cache" -oDir::State::Status=/dev/null)
hdr=linux-headers-$kabi
# linux-headers-KABI depends on its -common package and linux-kbuild-X.Y, of the same version.
deps=$(apt-cache "${apt[@]}" show "$hdr=$kver" 2>/dev/null | sed -n 's/^Depends: //p' | head -1) ||
	die "$hdr $kver is not in the $arch lists of $out/lists (the kernel was fetched from them: BOARD_REFRESH=1 fetches the current kernel)"
[ -n "$deps" ] || die "$hdr $kver is not in the $arch lists of $out/lists (BOARD_REFRESH=1 fetches the current kernel)"
common=$(echo "$deps" | tr ',' '\n' | sed -n 's/^ *\(linux-headers-[^ ]*-common\) .*/\1/p')
kbuild=$(echo "$deps" | tr ',' '\n' | sed -n 's/^ *\(linux-kbuild-[0-9.]*\) .*/\1/p')
if [ -z "$common" ] || [ -z "$kbuild" ]; then
	die "$hdr $kver: no -common or linux-kbuild in its Depends: $deps"
fi
src=linux-source-${kbuild#linux-kbuild-}
(cd "$tmp/debs" && retry apt-get "${apt[@]}" download "$hdr=$kver" "$common=$kver" "$src=$kver" >>"$tmp/apt.log" 2>&1) ||
	{ tail -5 "$tmp/apt.log" >&2; die "could not download $hdr, $common and $src $kver"; }
t_src_dl=$(date +%s)
# linux-kbuild holds programs (fixdep, modpost) for the machine that builds: the
# host's architecture, from a private state of its own (the host's apt is not touched).
host_arch=$(dpkg --print-architecture)
if [ "$host_arch" = "$arch" ]; then
	hapt=("${apt[@]}")
else
	hapt=(-q -oAPT::Architecture="$host_arch" -oAPT::Architectures="$host_arch"
		-oDir::State::Lists="$tmp/lists-$host_arch" -oDir::Cache="$tmp/apt-cache" -oDir::State::Status=/dev/null)
	mkdir -p "$tmp/lists-$host_arch/partial"
	retry apt-get "${hapt[@]}" update >>"$tmp/apt.log" 2>&1 ||
		echo "fetch-vicodec: apt-get update for $host_arch kept failing; trying with the lists there are" >&2
fi
(cd "$tmp/debs" && retry apt-get "${hapt[@]}" download "$kbuild:$host_arch=$kver" >>"$tmp/apt.log" 2>&1) ||
	{ tail -5 "$tmp/apt.log" >&2; die "could not download $kbuild:$host_arch $kver"; }
t_dl=$(date +%s)
size=$(du -sh "$tmp/debs" | cut -f1)

for d in "$tmp"/debs/linux-headers-*.deb "$tmp"/debs/linux-kbuild-*.deb; do
	dpkg-deb -x "$d" "$tmp/root"
done
hdir=$tmp/root/usr/src/$hdr
# Its Makefile is one line, "include /usr/src/linux-headers-...-common/Makefile":
# point it at the unpacked copy.
sed -i "s|^include /usr/src/|include $tmp/root/usr/src/|" "$hdir/Makefile"
cc=$(sed -n 's/^CC = .*(CROSS_COMPILE)\([^ ]*\)$/\1/p' "$hdir/.kernelvariables")
[ -n "$cc" ] || die "$hdr: no CC in .kernelvariables"
command -v "$cross$cc" >/dev/null || die "$cross$cc is missing (the kernel was built with $cc: apt-get install $gcc_pkg)"
# Only the driver's directory is unpacked from the source tarball (it is streamed:
# nothing but the directory is written).
vsrc=drivers/media/test-drivers/vicodec
dpkg-deb --fsys-tarfile "$tmp"/debs/"$src"_*.deb | tar -xO "./usr/src/$src.tar.xz" | xz -dc |
	tar -x -C "$tmp" --strip-components=1 "$src/$vsrc"
[ -f "$tmp/$vsrc/vicodec-core.c" ] || die "no $vsrc/vicodec-core.c in $src $kver"
rm -f "$tmp"/debs/"$src"_*.deb
t_src=$(date +%s)

make -C "$hdir" M="$tmp/$vsrc" ARCH="$kernel_arch" CROSS_COMPILE="$cross" CONFIG_VIDEO_VICODEC=m modules \
	>"$tmp/build.log" 2>&1 || { tail -20 "$tmp/build.log" >&2; die "building vicodec failed"; }
built=$tmp/$vsrc/vicodec.ko
want=$(modinfo -F vermagic "$(find "$k/lib/modules/$kabi/kernel/drivers/media" -name 'vivid.ko*' | head -1)")
got=$(modinfo -F vermagic "$built")
[ "$got" = "$want" ] || die "vicodec.ko's vermagic '$got' is not the kernel's '$want'"
t_build=$(date +%s)

rm -rf "$out/vicodec/$key.new"
mkdir -p "$out/vicodec/$key.new"
# Without its debug information, as Debian ships its modules (800 KB to 60 KB).
"${cross}strip" --strip-debug -o "$out/vicodec/$key.new/vicodec.ko" "$built"
echo "vicodec from $src $kver for $kabi, built with $("$cross$cc" --version | head -1)" >"$out/vicodec/$key.new/ok"
# Only this kernel's build is kept.
find "$out/vicodec" -mindepth 1 -maxdepth 1 ! -name build.tmp ! -name "$key.new" -exec rm -rf {} +
mv "$out/vicodec/$key.new" "$cache"
echo "fetch-vicodec: built in $((t_build - t0))s: download $size $((t_dl - t0))s (source and headers $((t_src_dl - t0))s, $host_arch lists and $kbuild $((t_dl - t_src_dl))s), unpack $((t_src - t_dl))s, compile $((t_build - t_src))s"
install_ko
