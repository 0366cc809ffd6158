#!/bin/sh
# Prints the path of a Go toolchain that can build keyframe (the go line of
# go.mod), installing one if needed. Go >= 1.21 fetches the exact toolchain
# itself (GOTOOLCHAIN=auto); older or missing Go: the toolchain module is
# fetched from the Go module proxy into ~/.cache/keyframe.
set -eu
want=$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$(dirname "$0")/../go.mod")
ok() { # is $1 a go >= 1.21?
	v=$("$1" env GOVERSION 2>/dev/null | sed 's/^go//') || return 1
	major=${v%%.*}; rest=${v#*.}; minor=${rest%%.*}
	[ "$major" -gt 1 ] || [ "$minor" -ge 21 ]
}
for g in "$(command -v go 2>/dev/null || true)" /usr/local/go/bin/go "$HOME/.cache/keyframe/go/bin/go"; do
	if [ -n "$g" ] && [ -x "$g" ] && ok "$g"; then echo "$g"; exit 0; fi
done
arch=$(uname -m)
case "$arch" in
	x86_64) garch=amd64 ;; aarch64) garch=arm64 ;; armv6l|armv7l) garch=armv6l ;;
	*) echo "ensure-go: no Go toolchain for $arch" >&2; exit 1 ;;
esac
if ! command -v curl >/dev/null || ! command -v unzip >/dev/null; then
	echo "ensure-go: installing curl and unzip" >&2
	if [ "$(id -u)" = 0 ]; then apt-get update -qq >&2 && apt-get install -y -qq curl unzip ca-certificates >&2
	else sudo apt-get update -qq >&2 && sudo apt-get install -y -qq curl unzip ca-certificates >&2; fi
fi
proxy=${GOPROXY:-https://proxy.golang.org}; proxy=${proxy%%,*}
dest="$HOME/.cache/keyframe"
mkdir -p "$dest"
echo "ensure-go: fetching Go $want for linux/$garch from the module proxy" >&2
curl -fsSL -o "$dest/go.zip" "$proxy/golang.org/toolchain/@v/v0.0.1-go$want.linux-$garch.zip" >&2
rm -rf "$dest/unz" "$dest/go" && unzip -q "$dest/go.zip" -d "$dest/unz" >&2
mv "$dest/unz/golang.org/toolchain@v0.0.1-go$want.linux-$garch" "$dest/go"
rm -rf "$dest/unz" "$dest/go.zip"
chmod +x "$dest/go/bin/"* "$dest/go/pkg/tool/"*/* 2>/dev/null || true
echo "$dest/go/bin/go"
