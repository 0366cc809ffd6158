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
# With TAGS=webrtc (more build tags, comma-separated) the WebRTC live view
# is built in (pion/webrtc, docs/live.md): at most 12 MiB for linux/arm
# GOARM=6; without it the binary links no WebRTC code.
# usage: scripts/build-keyframe.sh OUT [VERSION]   (GOOS, GOARCH, GOARM, TAGS from the environment)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: build-keyframe.sh OUT [VERSION]}
version=${2:-dev}
go=$(scripts/ensure-go.sh)
mod=github.com/keyframe-cam/keyframe
# The last pattern a package matches wins: no inlining anywhere, then the
# per-pixel packages get the compiler's defaults back. Of the standard
# library's cryptography only what runs per byte keeps it: SHA-256, AES and
# GCM (clip frames' hashes, sealing, TLS records) and X25519's field
# arithmetic (a seal's key agreement); HPKE's and HKDF's glue, Ed25519,
# ML-KEM and HMAC run a few times per object and lose it (16 KB on linux/arm,
# room the hardware encoder's code needed: 8 376 482 bytes with it).
gcflags=(-gcflags=all=-l)
for p in $mod/motion $mod/capture $mod/clip image image/color image/jpeg \
	crypto/sha256 crypto/internal/fips140/sha256 crypto/internal/fips140/aes crypto/internal/fips140/aes/gcm \
	crypto/internal/fips140/subtle crypto/internal/fips140deps/byteorder internal/byteorder \
	crypto/internal/fips140/edwards25519/field \
	runtime internal/bytealg bytes; do
	gcflags+=("-gcflags=$p=")
done
# Except bigmod and nistec (P-256 and RSA arithmetic: a record's ECDSA
# signature, a TLS handshake's key exchange and certificate check, a few a
# minute), which inlining makes 31 KB larger on linux/arm; without it an
# ECDSA P-256 signature takes about 15 % longer (qemu-arm, CPU time: 25 ms
# against 21.5 ms, beside a TPM's 100 ms), RSA-2048 verification no longer
# measurably. Nothing per frame or per byte is in them.
for p in crypto/internal/fips140/bigmod crypto/internal/fips140/nistec 'crypto/internal/fips140/nistec/...'; do
	gcflags+=("-gcflags=$p=-l")
done
# On 32-bit ARM the linker aligns each segment (code, read-only data, data)
# to 64 KiB by default, so the file grows in 64 KiB steps and wastes up to
# that much per segment; a 32-bit ARM kernel's pages are always 4 KiB, so
# 4 KiB alignment (-R 4096, what C toolchains use there) loads the same and
# saves about 90 KB (8 388 770 against 8 298 658 bytes when H.264 clips came
# in). Not on arm64, whose kernels may use 16 KiB pages (a Raspberry Pi 5).
round=()
if [ "${GOARCH:-$("$go" env GOARCH)}" = arm ]; then
	round=(-R 4096)
fi
tags=nethttpomithttp2${TAGS:+,$TAGS}
CGO_ENABLED=0 "$go" build -tags "$tags" -trimpath -ldflags "-s -w ${round[*]} -X main.version=$version" "${gcflags[@]}" -o "$out" ./cmd/keyframe
