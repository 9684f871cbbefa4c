# graft: two commands on a fresh Debian 12 machine.
#   make demo   installs what is missing, builds, runs the demo
#   make test   installs what is missing, builds, runs every test
SWIFT ?= swift
# Debian packages graft needs to build and test (checked one by one; only missing ones are installed).
APT_PACKAGES := gcc g++ make pkg-config binutils file libunwind-dev liblzma-dev libcapstone-dev libdw-dev libelf-dev zlib1g-dev libbz2-dev libyaml-dev golang-go gdb python3-minimal musl-tools libiberty-dev
# graft patch --file's tests: cross compilers and qemu-user (gcc-multilib conflicts with the ARM cross
# compilers in Debian, so i386 builds with gcc-i686-linux-gnu).
APT_PACKAGES += gcc-i686-linux-gnu gcc-arm-linux-gnueabihf gcc-aarch64-linux-gnu qemu-user
VICTIMS := $(CURDIR)/.build/victims

.PHONY: all deps build release release-check victims test demo bench completions clean

all: build

deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null || exit 1; \
	fi
	@command -v $(SWIFT) >/dev/null || { echo "swift is not on PATH: install Swift 6 (https://www.swift.org/install/linux/)"; exit 1; }

build: deps
	$(SWIFT) build

# One file to copy to a host without Swift: the release binary needs only glibc. The Swift runtime
# is linked statically (--static-swift-stdlib); libunwind, liblzma, capstone, libyaml, libstdc++ and elfutils'
# libdw/libelf (with zlib and bzip2) come from
# their static archives: a directory holding only those archives is searched first (pkg-config
# files whose libdir points there). The archives are not PIC, so the binary is not PIE.
STATIC := $(CURDIR)/.build/static-link
release: deps
	@rm -rf $(STATIC) && mkdir -p $(STATIC)/lib $(STATIC)/pkgconfig
	@libdir=$$(pkg-config --variable=libdir libunwind-ptrace); \
	for a in libunwind-ptrace libunwind-generic libunwind liblzma libcapstone libdw libelf libz libbz2 libyaml; do \
	  test -f $$libdir/$$a.a || { echo "no $$libdir/$$a.a (static archive)"; exit 1; }; ln -s $$libdir/$$a.a $(STATIC)/lib/; done; \
	ln -s $$(g++ -print-file-name=libstdc++.a) $(STATIC)/lib/; \
	for pc in libunwind-ptrace capstone libdw libelf yaml-0.1; do \
	  sed 's|^libdir=.*|libdir=$(STATIC)/lib|' $$(pkg-config --variable=pcfiledir $$pc)/$$pc.pc > $(STATIC)/pkgconfig/$$pc.pc; done
	$(SWIFT) build -c release --static-swift-stdlib --pkg-config-path $(STATIC)/pkgconfig \
	  -Xswiftc -Xclang-linker -Xswiftc -no-pie -Xswiftc -Xclang-linker -Xswiftc -static-libgcc

# The release binary started with the Swift toolchain and the shared libunwind/lzma/capstone hidden
# (a private mount namespace: root).
release-check: release victims
	Tests/release-check.sh

victims: deps
	@$(MAKE) -s -C TestTargets OUT=$(VICTIMS)

test: build victims
	$(SWIFT) test

demo: build
	$(SWIFT) run --skip-build graft demo

# The stop window first must do no Swift runtime work (metadata look-ups cost 5-30 µs each):
# bench/window_runtime.sh fails on one (root + bpftrace only; skipped otherwise).
bench: release victims
	@if [ "$$(id -u)" = 0 ] && command -v bpftrace >/dev/null; then bench/window_runtime.sh both 1; \
	else echo "bench: not root or no bpftrace: skipping bench/window_runtime.sh"; fi
	bench/run.sh

completions: build
	@mkdir -p .build/completions
	.build/debug/graft --generate-completion-script bash > .build/completions/graft.bash
	.build/debug/graft --generate-completion-script zsh > .build/completions/_graft
	.build/debug/graft --generate-completion-script fish > .build/completions/graft.fish
	@echo "completion scripts in .build/completions (see README: Shell completion)"

clean:
	rm -rf .build
