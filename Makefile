# dimg - see README.md. `make demo` and `make test` are the two set-up commands.
GO       ?= go
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
BIN      := bin/dimg
DEMO     := build/demo
LDFLAGS  := -X main.version=$(VERSION)

.PHONY: all build test test-seaweedfs demo bench boottest crash fuzz deps vet clean

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/dimg

deps:
	./scripts/deps.sh test

vet:
	@files=$$(gofmt -l $$(find . -name '*.go' -not -path './build/*')); \
	test -z "$$files" || { echo "$$files"; echo "gofmt: files above need formatting"; exit 1; }
	$(GO) vet ./...

# Installs missing Debian packages, then vet and every test, including the
# root-only integration tests (they skip with the reason when not root).
test: deps vet
	$(GO) test -timeout 25m -p 2 ./...

# The S3 upload and read tests against a real S3 server: SeaweedFS's S3
# gateway on loopback (make test uses gofakes3, in process). Builds weed
# once into ~/.cache/dimg-s3test (minutes).
test-seaweedfs: deps
	./scripts/build-weed.sh
	DIMG_TEST_S3=seaweedfs $(GO) test -count=1 -timeout 20m ./cloneio/objstore/... ./cloneio/remote/s3
	DIMG_TEST_S3=seaweedfs $(GO) test -count=1 -timeout 20m -run 'S3' ./cmd/dimg

# Builds dimg, generates a sample disk, captures it, shows info, restores
# it and verifies it, printing each step.
demo: build
	./scripts/demo.sh

# Side-by-side benchmarks (root): capture/restore/clone vs lz4 and
# partclone, reading out of images vs loop mounts and ewfmount, the
# filesystem drivers' reads vs raw reads, writes through mount --rw vs a
# raw file, committing 1 MiB to a 4 GiB and a 2 TiB disk's image vs a
# qcow2 overlay and qemu-img commit, multicast vs udpcast, personalizing
# an image (vs virt-sysprep where libguestfs runs). Each prints a
# markdown table.
bench: build
	./scripts/deps.sh bench
	./scripts/bench.sh
	./scripts/bench-mount.sh
	./scripts/bench-rwmount.sh
	./scripts/bench-edit.sh
	./scripts/bench-commit.sh
	./scripts/bench-drivers.sh
	./scripts/bench-shrink.sh
	./scripts/bench-remote.sh
	@if [ -x ./scripts/bench-multicast.sh ]; then ./scripts/bench-multicast.sh; fi
	./scripts/bench-personalize.sh

# kill -9 trials (root, FUSE): dimg killed at random moments while
# mount --rw commits at unmount, while it takes writes, at its start and
# while compact rewrites; `make test` runs a few of each. CRASH_TRIALS=50
# gives 50 commit trials, 20 writing, 10 compact and 50 at the start.
CRASH_TRIALS ?= 50
crash:
	DIMG_CRASH_TRIALS=$(CRASH_TRIALS) $(GO) test -count=1 -timeout 15m -v -run 'TestCrashMountRW|TestMountKillAtStart|TestCrashAdd' ./cmd/dimg

# Every bootable-disk test (qemu under TCG): make test boots a subset of
# the deploy paths (bios: restore --grow, receive; uefi: clone --grow);
# this boots both disks after each of restore --grow, clone --grow and
# receive, and after personalize.
boottest:
	DIMG_BOOT_ALL=1 $(GO) test -count=1 -timeout 20m -run 'Boot' ./testimages ./cmd/dimg

# Runs each fuzz target for FUZZTIME (default 60s), then the writers'
# randomized differential tests at full length (DIFF_OPS operations per
# filesystem; make test runs 200; DIMG_DIFF_SEED=N replays a failure).
FUZZTIME ?= 60s
DIFF_OPS ?= 1000
fuzz:
	./scripts/fuzz.sh $(FUZZTIME)
	DIMG_DIFF_OPS=$(DIFF_OPS) $(GO) test -count=1 -timeout 60m -v -run 'TestDiffMount|TestDiffOffline' ./cmd/dimg

clean:
	rm -rf bin build
