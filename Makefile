# keyframe: the two commands are `make run` and `make test`.
SHELL := /bin/bash
GO := $(shell scripts/ensure-go.sh)
ifeq ($(GO),)
$(error no Go toolchain: scripts/ensure-go.sh failed)
endif
export CGO_ENABLED := 0
VERSION := $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
BUILD := $(GO) build -trimpath -ldflags '$(LDFLAGS)'
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: all build run test unit race lint cross e2e bench bench-mog2 clean config-doc board-test eval eval-peers storm storm-e2ee

all: build

# Two binaries: keyframe, the camera's (scripts/build-keyframe.sh: sized for a camera, at
# most 8 MiB for linux/arm GOARM=6), and keyframe-receiver (the receiver, verify, eval, storm).
build:
	@[ -x bin/keyframe ] || echo "build: compiling keyframe and keyframe-receiver (the first build takes a minute or two)"
	scripts/build-keyframe.sh bin/keyframe $(VERSION)
	$(BUILD) -o bin/keyframe-receiver ./cmd/keyframe-receiver

## run: a local receiver plus the agent (on /dev/video0 if present, else the synthetic scene)
run: build
	scripts/run-demo.sh bin/keyframe bin/keyframe-receiver

## test: formatting, vet, staticcheck, unit and end-to-end tests, cross-builds
test: lint unit cross

# The labelled footage (not in the repo) for motion/eval's TestRealData, which skips
# without it (fails under CI=true). Only that package sees KEYFRAME_MOTION_DATA: the
# agent's config loader refuses KEYFRAME_* variables it does not know.
MOTION_DATA ?= ../shared/motion-data
EVAL_PKG := ./motion/eval
OTHER_PKGS = $$($(GO) list ./... | grep -v '/motion/eval$$')

unit:
	scripts/ensure-test-deps.sh
	$(GO) test -count=1 $(OTHER_PKGS)
	KEYFRAME_MOTION_DATA=$(abspath $(MOTION_DATA)) $(GO) test -count=1 $(EVAL_PKG)
	@py=$$(command -v /usr/bin/python3 || command -v python3 || true); \
	  if [ -n "$$py" ]; then $$py -m unittest discover -s scripts/peers -p 'test_*.py'; \
	  else echo "unit: no python3: skipping the peers harness's scoring tests (scripts/peers)"; fi

lint:
	@out=$$($(dir $(GO))gofmt -s -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt -s would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...
	@cp go.mod /tmp/keyframe-go.mod.bak; cp go.sum /tmp/keyframe-go.sum.bak; $(GO) mod tidy; \
	  if ! cmp -s go.mod /tmp/keyframe-go.mod.bak || ! cmp -s go.sum /tmp/keyframe-go.sum.bak; then \
	    echo "go mod tidy changes go.mod/go.sum: commit the tidy result"; cp /tmp/keyframe-go.mod.bak go.mod; cp /tmp/keyframe-go.sum.bak go.sum; exit 1; fi

## cross: static binaries for linux/arm (GOARM=6, 7) and linux/arm64
cross:
	GOOS=linux GOARCH=arm GOARM=6 scripts/build-keyframe.sh bin/keyframe-linux-armv6 $(VERSION)
	GOOS=linux GOARCH=arm GOARM=7 scripts/build-keyframe.sh bin/keyframe-linux-armv7 $(VERSION)
	GOOS=linux GOARCH=arm64 scripts/build-keyframe.sh bin/keyframe-linux-arm64 $(VERSION)
	GOOS=linux GOARCH=arm GOARM=6 $(BUILD) -o bin/keyframe-receiver-linux-armv6 ./cmd/keyframe-receiver
	GOOS=linux GOARCH=arm GOARM=7 $(BUILD) -o bin/keyframe-receiver-linux-armv7 ./cmd/keyframe-receiver
	GOOS=linux GOARCH=arm64 $(BUILD) -o bin/keyframe-receiver-linux-arm64 ./cmd/keyframe-receiver
	@for b in bin/keyframe-linux-armv6 bin/keyframe-linux-armv7 bin/keyframe-linux-arm64 \
	  bin/keyframe-receiver-linux-armv6 bin/keyframe-receiver-linux-armv7 bin/keyframe-receiver-linux-arm64; do \
	  file $$b 2>/dev/null | grep -q 'statically linked' || { readelf -l $$b 2>/dev/null | grep -q INTERP && { echo "$$b is not static"; exit 1; }; }; \
	  printf '%-37s %9s bytes\n' $$b $$(stat -c %s $$b); done; \
	  echo "the camera's binary (keyframe) for linux/arm GOARM=6 must stay at most 8 MiB (8388608 bytes): TestDeviceBinarySize"

config-doc: build
	scripts/gen-config-doc.sh bin/keyframe

## race: the unit tests under the race detector (cgo: needs gcc)
race:
	scripts/ensure-test-deps.sh
	CGO_ENABLED=1 $(GO) test -race -count=1 $(OTHER_PKGS)
	CGO_ENABLED=1 KEYFRAME_MOTION_DATA=$(abspath $(MOTION_DATA)) $(GO) test -race -count=1 -skip '^TestRealData$$' $(EVAL_PKG)

## bench: the detector, capture, M2M encoder (fake driver), clip and e2ee sealing benchmarks (BENCHTIME=1x: each once, as CI runs them)
BENCHTIME ?=
bench:
	$(GO) test -run '^$$' -bench . -benchmem $(if $(BENCHTIME),-benchtime=$(BENCHTIME)) ./motion/ ./capture/ ./capture/m2m/ ./clip/ ./e2ee/

## bench-mog2: keyframe's step and OpenCV MOG2 on the same 640x480 frames of vtest.avi
bench-mog2:
	@[ -d "$(MOTION_DATA)/opencv_vtest" ] || { echo "bench-mog2: $(MOTION_DATA)/opencv_vtest not found: pass MOTION_DATA=DIR"; exit 1; }
	rm -rf .bench-frames
	scripts/peers/run.sh --bench-mog2 $(MOTION_DATA)/opencv_vtest --dump-frames .bench-frames
	KEYFRAME_BENCH_FRAMES=$(CURDIR)/.bench-frames $(GO) test -run '^$$' -bench 'BenchmarkStepFrames' -benchmem -count 3 ./motion/

## eval: score the detector on labelled footage (MOTION_DATA, default ../shared/motion-data)
eval: build
	@[ -d "$(MOTION_DATA)" ] || { echo "eval: $(MOTION_DATA) not found: the labelled footage is not part of the repo; pass MOTION_DATA=DIR"; exit 1; }
	bin/keyframe-receiver eval $(MOTION_DATA)

## eval-peers: keyframe, a Frigate-style pipeline and OpenCV MOG2 side by side
eval-peers: build
	@[ -d "$(MOTION_DATA)" ] || { echo "eval-peers: $(MOTION_DATA) not found: pass MOTION_DATA=DIR"; exit 1; }
	scripts/peers/compare.sh $(MOTION_DATA)

## storm: the outage storm (docs/storm.md): a fleet reconnecting at once against a real receiver,
## owners viewing through a cache that mixes devices up; fails if anything is lost, stored
## twice or shown to the wrong owner. STORM_FLAGS="--devices 10000 --mixup-rate 0.01" for the full run.
STORM_FLAGS ?= --devices 2000 --outage 5s
storm: build
	bin/keyframe-receiver storm $(STORM_FLAGS)

## storm-e2ee: the same storm with every thumbnail sealed to its owner's key set (docs/e2ee.md).
storm-e2ee: build
	bin/keyframe-receiver storm --e2ee $(STORM_FLAGS)

clean:
	rm -rf bin

## board-test: the agent on an emulated ARM board (QEMU, Debian kernel, vivid camera), each
## scenario verified by a host receiver over HTTPS; ARCH=armhf for 32-bit (docs/board-test.md)
BOARD_ARCH ?= $(or $(ARCH),arm64)
BOARD_SCENARIOS ?=
.PHONY: board-test
board-test: build cross
	ARCH=$(BOARD_ARCH) scripts/board/board-test.sh $(BOARD_SCENARIOS)

## board-install-test: the keyframe .deb installed with dpkg -i on an emulated Debian board
## (systemd, a cached debootstrap root file system, vivid); the service, as the keyframe
## user, must get an event verified by a host receiver; ARCH=armhf too (docs/board-test.md)
.PHONY: board-install-test
board-install-test: dist build
	ARCH=$(BOARD_ARCH) scripts/board/install-test.sh

## dist: Debian packages keyframe and keyframe-receiver for armhf (GOARM=6), arm64 and amd64
## in dist/, built with nfpm (docs/packages.md); check-units: their systemd units' checks
.PHONY: dist check-units
dist:
	GO=$(GO) VERSION=$(VERSION) scripts/dist.sh
check-units: dist
	scripts/check-units.sh dist
