#!/usr/bin/env bash
# usage: fetch-kernel.sh ARCH OUT        (ARCH = arm64 | armhf)
#
# Fetches Debian's own kernel and busybox-static for ARCH with a private apt
# state (lists for the foreign architecture only; the host's apt is untouched),
# unpacks them into OUT/kernel and OUT/busybox and builds OUT/kernel's
# modules.dep (the .deb ships none). A finished fetch is cached: OUT/ok names
# what was fetched and a later run reuses it without network access. It is
# refreshed when older than BOARD_KERNEL_MAX_AGE_DAYS (default 7) or when
# BOARD_REFRESH=1; if a refresh fails, the cached kernel is used.
set -euo pipefail

die() { echo "fetch-kernel: $*" >&2; exit 1; }
[ $# -eq 2 ] || die "usage: fetch-kernel.sh arm64|armhf OUT"
arch=$1
out=$(realpath -m "$2")
case $arch in
arm64) meta=linux-image-arm64 ;;
armhf) meta=linux-image-armmp ;;
*) die "unknown ARCH $arch (want arm64 or armhf)" ;;
esac
for c in apt-get apt-cache dpkg-deb depmod; do
	command -v "$c" >/dev/null || die "$c is missing (apt-get install kmod dpkg)"
done

stamp=$out/ok
max_age=${BOARD_KERNEL_MAX_AGE_DAYS:-7}
cached() { [ -s "$stamp" ] && [ -d "$out/kernel/lib/modules" ] && [ -x "$out/busybox/bin/busybox" ]; }
if cached && [ "${BOARD_REFRESH:-0}" != 1 ] && [ -z "$(find "$stamp" -mtime +"$max_age")" ]; then
	echo "fetch-kernel: cached: $(cat "$stamp")"
	exit 0
fi

# retry CMD...: three tries, 3 s apart (mirrors are sometimes mid-sync).
retry() {
	local i
	for i in 1 2 3; do
		"$@" && return 0
		echo "fetch-kernel: failed (try $i/3): $*" >&2
		[ "$i" = 3 ] || sleep 3
	done
	return 1
}

fetch() {
	local apt=(-q -oAPT::Architecture="$arch" -oAPT::Architectures="$arch"
		-oDir::State::Lists="$out/lists" -oDir::Cache="$out/apt-cache"
		-oDir::State::Status=/dev/null)
	mkdir -p "$out/lists/partial" "$out/apt-cache/archives/partial" "$out/debs.new" || return 1
	rm -f "$out"/debs.new/*.deb
	# An index that fails to update (pitfall: "File has unexpected size" while a
	# mirror syncs) leaves the others usable: retry, then go on with what there is.
	retry apt-get "${apt[@]}" update >"$out/apt-update.log" 2>&1 ||
		echo "fetch-kernel: apt-get update kept failing; trying with the lists there are (see $out/apt-update.log)" >&2

	# The kernel package's name carries its ABI number, which changes with
	# updates: resolve it through the meta package, newest version first, and
	# fall back to an older one (e.g. the main archive's instead of the
	# security archive's) if a download fails.
	local versions v dep kpkg kver got=
	versions=$(apt-cache "${apt[@]}" madison "$meta" 2>/dev/null | awk -F'|' '{gsub(/ /,"",$2); print $2}' | sort -Vru)
	[ -n "$versions" ] || { echo "fetch-kernel: $meta not found in the $arch lists" >&2; return 1; }
	for v in $versions; do
		dep=$(apt-cache "${apt[@]}" show "$meta=$v" 2>/dev/null |
			sed -n 's/^Depends: .*\(linux-image-[0-9][^ ,]*\) (= \([^)]*\)).*/\1 \2/p' | head -1)
		[ -n "$dep" ] || continue
		kpkg=${dep% *} kver=${dep#* }
		if (cd "$out/debs.new" && retry apt-get "${apt[@]}" download "$kpkg=$kver" >>"$out/apt-download.log" 2>&1); then
			got="$kpkg $kver"
			break
		fi
		echo "fetch-kernel: could not download $kpkg $kver; trying an older $meta" >&2
	done
	[ -n "$got" ] || { echo "fetch-kernel: no kernel for $arch could be downloaded (see $out/apt-download.log)" >&2; return 1; }
	(cd "$out/debs.new" && retry apt-get "${apt[@]}" download busybox-static >>"$out/apt-download.log" 2>&1) ||
		{ echo "fetch-kernel: busybox-static for $arch could not be downloaded" >&2; return 1; }

	# (set -e does not apply inside a function called from "if": every step says || return.)
	rm -rf "$out/kernel.new" "$out/busybox.new"
	dpkg-deb -x "$out"/debs.new/linux-image-*.deb "$out/kernel.new" || return 1
	dpkg-deb -x "$out"/debs.new/busybox-static_*.deb "$out/busybox.new" || return 1
	local kabi
	kabi=$(ls "$out/kernel.new/lib/modules") || return 1
	depmod -b "$out/kernel.new" "$kabi" || return 1
	ls "$out"/kernel.new/boot/vmlinuz-* >/dev/null || return 1
	[ -x "$out/busybox.new/bin/busybox" ] || return 1
	local size
	size=$(du -sh "$out/debs.new" | cut -f1)
	echo "$got ($kabi), $(basename "$out"/debs.new/busybox-static_*.deb .deb)" >"$stamp.tmp"
	rm -rf "$out/kernel" "$out/busybox"
	mv "$out/kernel.new" "$out/kernel" && mv "$out/busybox.new" "$out/busybox" || return 1
	mv "$stamp.tmp" "$stamp"
	rm -rf "$out/apt-cache" "$out/debs.new"
	echo "fetch-kernel: fetched $(cat "$stamp"): $size of packages"
}

if ! fetch; then
	if cached; then
		echo "fetch-kernel: refresh failed; using the cached $(cat "$stamp")" >&2
		exit 0
	fi
	die "no $arch kernel"
fi
