#!/usr/bin/env bash
# Builds the camera's binary, keyframe, as small as it goes: static, stripped,
# without net/http's HTTP/2 (the agent speaks HTTP/1.1; nethttpomithttp2), and
# without inlining in network, crypto, CBOR and TPM packages that run once per connection
# or per event, never per pixel (about 450 KB less on linux/arm). The budget
# is 8 MiB for linux/arm GOARM=6 (TestDeviceBinarySize).
# usage: scripts/build-keyframe.sh OUT [VERSION]   (GOOS, GOARCH, GOARM from the environment)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: build-keyframe.sh OUT [VERSION]}
version=${2:-dev}
go=$(scripts/ensure-go.sh)
gcflags=()
# Each runs per connection, per record or per event: TLS, certificates, JSON,
# MQTT, CBOR/COSE and signatures, the TPM, uploads, the record chain. Never
# capture, motion or the agent's frame loop (inlining there is speed, and
# what keeps the steady state free of allocations).
mod=github.com/keyframe-cam/keyframe
for p in net net/http net/url mime/... crypto/tls crypto/x509 crypto/ecdsa crypto/ed25519 crypto/rsa \
	math/big encoding/asn1 encoding/json golang.org/x/net/... github.com/eclipse/paho.mqtt.golang/... \
	github.com/gorilla/websocket github.com/fxamacker/cbor/v2 github.com/veraison/go-cose github.com/google/go-tpm/... \
	$mod/uploader $mod/provenance $mod/join $mod/internal/mqttlink $mod/recorder/...; do
	gcflags+=("-gcflags=$p=-l")
done
CGO_ENABLED=0 "$go" build -tags nethttpomithttp2 -trimpath -ldflags "-s -w -X main.version=$version" "${gcflags[@]}" -o "$out" ./cmd/keyframe
