#!/usr/bin/env bash
# Builds the Debian packages into dist/ with nfpm (docs/packages.md): keyframe
# (the device binary, /etc/keyframe/keyframe.conf, keyframe.service) and
# keyframe-receiver (the receiver's binary, keyframe-receiver.service), each
# for armhf (GOARM=6: every Raspberry Pi from the Zero on), arm64 and amd64.
#
# Variables (the Makefile's dist target sets them):
#   GO                  the Go toolchain (default: scripts/ensure-go.sh)
#   VERSION             the program's version (-X main.version)
#   DIST_VERSION        the packages' version (default: from git, below)
#   DIST_ARCHES         Debian architectures (default: armhf arm64 amd64)
# /usr/bin/keyframe is built by scripts/build-keyframe.sh (the camera's build:
# no HTTP/2, held to 8 MiB for armhf), /usr/bin/keyframe-receiver from
# ./cmd/keyframe-receiver.
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-$(scripts/ensure-go.sh)}
NFPM=github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.48.0
arches=${DIST_ARCHES:-armhf arm64 amd64}
version=${VERSION:-$(git describe --always --dirty 2>/dev/null || echo dev)}

# A Debian version that grows with every commit: 1.2.3 for the tag v1.2.3,
# 1.2.3+4.gHASH four commits after it, 0.0.N+gHASH (N commits) before any tag.
deb_version() {
	local d
	if d=$(git describe --tags --match 'v[0-9]*' 2>/dev/null); then
		d=${d#v}
		echo "$d" | sed -E 's/-([0-9]+)-g([0-9a-f]+)$/+\1.g\2/'
	elif n=$(git rev-list --count HEAD 2>/dev/null); then
		echo "0.0.$n+g$(git rev-parse --short HEAD)"
	else
		echo 0.0.0
	fi
}
export DIST_VERSION=${DIST_VERSION:-$(deb_version)}
if ! git diff --quiet HEAD 2>/dev/null; then
	DIST_VERSION+=.dirty
fi
export DIST_MAINTAINER=${DIST_MAINTAINER:-keyframe developers <keyframe@users.noreply.github.com>}

# nfpm is run from its module at a fixed version: it is not a dependency of
# keyframe's go.mod (go mod tidy and the device binary never see it).
nfpm=(env CGO_ENABLED=0 GOOS= GOARCH= GOARM= "$GO" run "$NFPM")

build() { # build DEBARCH OUT (keyframe | keyframe-receiver)
	local goarch goarm=
	case "$1" in
	armhf) goarch=arm goarm=6 ;;
	arm64) goarch=arm64 ;;
	amd64) goarch=amd64 ;;
	*) echo "dist: unknown architecture $1 (armhf, arm64, amd64)" >&2; exit 1 ;;
	esac
	if [ "$3" = keyframe ]; then
		GOOS=linux GOARCH=$goarch GOARM=$goarm scripts/build-keyframe.sh "$2" "$version"
	else
		CGO_ENABLED=0 GOOS=linux GOARCH=$goarch GOARM=$goarm "$GO" build -trimpath \
			-ldflags "-s -w -X main.version=$version" -o "$2" ./cmd/keyframe-receiver
	fi
}

rm -rf dist
mkdir -p dist/build
for arch in $arches; do
	mkdir -p "dist/build/$arch"
	build "$arch" "dist/build/$arch/keyframe" keyframe
	build "$arch" "dist/build/$arch/keyframe-receiver" keyframe-receiver
	for pkg in keyframe keyframe-receiver; do
		DIST_ARCH=$arch DIST_DEVICE_BIN=dist/build/$arch/keyframe DIST_RECEIVER_BIN=dist/build/$arch/keyframe-receiver \
			"${nfpm[@]}" package --config "packaging/nfpm-$pkg.yaml" --packager deb --target dist/ >/dev/null
	done
done
rm -rf dist/build
for f in dist/*.deb; do
	printf '%-52s %9s bytes\n' "$f" "$(stat -c %s "$f")"
done
