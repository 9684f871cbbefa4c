# graft: two commands on a fresh Debian 12 machine.
#   make demo   installs what is missing, builds, runs the demo
#   make test   installs what is missing, builds, runs every test
SWIFT ?= swift
# Debian packages graft needs to build and test (checked one by one; only missing ones are installed).
APT_PACKAGES := gcc g++ make pkg-config binutils file libunwind-dev liblzma-dev libcapstone-dev golang-go gdb python3-minimal
VICTIMS := $(CURDIR)/.build/victims

.PHONY: all deps build release victims test demo bench completions clean

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

release: deps
	$(SWIFT) build -c release

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
