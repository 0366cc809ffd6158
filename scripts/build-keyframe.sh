#!/usr/bin/env bash
# Builds the camera's binary, keyframe, as small as it goes: static, stripped,
# without net/http's HTTP/2 (the agent speaks HTTP/1.1; nethttpomithttp2), and
# without inlining except in the packages that run per pixel or per frame
# byte (the detector, the capture sources, JPEG encoding for thumbnails and
# clips, SHA-256 of clip frames, and the runtime's copy and compare): the rest
# (network, crypto handshakes, CBOR, TPM, logging, configuration, the agent's
# per-frame bookkeeping at 10-30 calls a second) loses nothing measurable, and
# the binary about 0.7 MB on linux/arm. The budget is 8 MiB for linux/arm
# GOARM=6 (TestDeviceBinarySize).
# usage: scripts/build-keyframe.sh OUT [VERSION]   (GOOS, GOARCH, GOARM from the environment)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: build-keyframe.sh OUT [VERSION]}
version=${2:-dev}
go=$(scripts/ensure-go.sh)
mod=github.com/keyframe-cam/keyframe
# The last pattern a package matches wins: no inlining anywhere, then the
# per-pixel packages get the compiler's defaults back.
gcflags=(-gcflags=all=-l)
for p in $mod/motion $mod/capture $mod/clip image image/color image/jpeg \
	crypto/sha256 crypto/internal/... runtime internal/bytealg bytes; do
	gcflags+=("-gcflags=$p=")
done
# Except bigmod (RSA and ECDSA scalar arithmetic: a TLS handshake's
# certificate check, a record's signature), which inlining makes 18 KB
# larger on linux/arm and no measurably faster (qemu-arm, CPU time: ECDSA
# P-256 sign and RSA-2048 verify within the run-to-run noise of about 15 %).
gcflags+=("-gcflags=crypto/internal/fips140/bigmod=-l")
CGO_ENABLED=0 "$go" build -tags nethttpomithttp2 -trimpath -ldflags "-s -w -X main.version=$version" "${gcflags[@]}" -o "$out" ./cmd/keyframe
