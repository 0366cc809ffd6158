#!/usr/bin/env bash
# Builds the camera's binary, keyframe, as small as it goes: static, stripped,
# without net/http's HTTP/2 (the agent speaks HTTP/1.1; nethttpomithttp2), and
# without inlining in network and TPM packages that run once per connection
# or per event, never per pixel (about 330 KB less on linux/arm). The budget
# is 8 MiB for linux/arm GOARM=6 (TestDeviceBinarySize).
# usage: scripts/build-keyframe.sh OUT [VERSION]   (GOOS, GOARCH, GOARM from the environment)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: build-keyframe.sh OUT [VERSION]}
version=${2:-dev}
go=$(scripts/ensure-go.sh)
gcflags=()
for p in net net/http crypto/tls crypto/x509 encoding/json github.com/eclipse/paho.mqtt.golang/... \
	github.com/gorilla/websocket github.com/fxamacker/cbor/v2 github.com/google/go-tpm/...; do
	gcflags+=("-gcflags=$p=-l")
done
CGO_ENABLED=0 "$go" build -tags nethttpomithttp2 -trimpath -ldflags "-s -w -X main.version=$version" "${gcflags[@]}" -o "$out" ./cmd/keyframe
