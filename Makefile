# splitpoint — the two commands a new machine needs are `make demo` and
# `make test`. Both install what is missing (Debian packages via apt-get,
# staticcheck via the Go module proxy) before they start.

GO          ?= go
STATICCHECK_VERSION := v0.8.2
TOOLS       := $(CURDIR)/.tools/bin
DEBS        := pkg-config libopencv-dev
# The tests' real tools: mosquitto_passwd (mosquitto), mosquitto_sub/_pub,
# htpasswd (apache2-utils), openssl (scripts/gen-certs.sh).
TEST_DEBS   := mosquitto mosquitto-clients apache2-utils openssl systemd iproute2 chromium prometheus
DURATION    ?=
SUDO        := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# make install: binaries to $(DESTDIR)$(PREFIX)/bin, configs to
# $(DESTDIR)$(SYSCONFDIR)/splitpoint, systemd units to $(DESTDIR)$(UNITDIR).
# BINSRC is where the binaries come from; the default, bin, is built first.
PREFIX      ?= /usr/local
DESTDIR     ?=
SYSCONFDIR  ?= /etc
UNITDIR     ?= /etc/systemd/system
BINSRC      ?= bin

.PHONY: all build install test test-mochi-patch test-system check demo bench sim deps tools vet staticcheck fmt fuzz clean

all: build

# Install the Debian packages that are missing (OpenCV 4.6 headers for gocv;
# for the tests also TEST_DEBS).
deps:
	@missing=""; for p in $(DEBS) $(EXTRA_DEBS); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

tools: $(TOOLS)/staticcheck

$(TOOLS)/staticcheck:
	GOBIN=$(TOOLS) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

build: deps
	$(GO) build -o bin/ ./cmd/gateway ./cmd/device ./cmd/cloudproc

# Install the binaries, the configs (a config already there is kept: it is
# the user's) and the systemd units of deploy/systemd, whose ExecStart paths
# are rewritten for PREFIX and SYSCONFDIR. Run it as yourself: it builds as
# you and writes through sudo when not root (not into a DESTDIR). Creates no
# user: it prints the commands that do (README: Running on a Raspberry Pi).
install: ISUDO = $(if $(DESTDIR),,$(SUDO))
install: $(if $(filter bin,$(BINSRC)),build)
	$(ISUDO) mkdir -p $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(SYSCONFDIR)/splitpoint $(DESTDIR)$(UNITDIR)
	$(ISUDO) install -m 755 $(BINSRC)/gateway $(BINSRC)/device $(BINSRC)/cloudproc $(DESTDIR)$(PREFIX)/bin/
	@for c in gateway pi cloud; do \
		dst=$(DESTDIR)$(SYSCONFDIR)/splitpoint/$$c.toml; \
		if [ -e "$$dst" ]; then echo "keeping $$dst (not overwritten; compare with configs/$$c.toml)"; \
		else echo "install -m 640 configs/$$c.toml $$dst"; $(ISUDO) install -m 640 configs/$$c.toml "$$dst" || exit 1; fi; \
	done
	@for u in gateway device cloudproc; do \
		dst=$(DESTDIR)$(UNITDIR)/splitpoint-$$u.service; \
		echo "install -m 644 deploy/systemd/splitpoint-$$u.service $$dst (ExecStart: $(PREFIX)/bin, $(SYSCONFDIR)/splitpoint)"; \
		tmp=$$(mktemp) || exit 1; \
		sed -e '/^ExecStart=/s|/usr/local/bin/|$(PREFIX)/bin/|' \
			-e '/^ExecStart=/s|/etc/splitpoint/|$(SYSCONFDIR)/splitpoint/|' \
			deploy/systemd/splitpoint-$$u.service > "$$tmp" && \
		$(ISUDO) install -m 644 "$$tmp" "$$dst"; rc=$$?; rm -f "$$tmp"; [ $$rc = 0 ] || exit 1; \
	done
	@echo; echo "Then, as root, create the service user once and let it read the configs:"; \
	echo "  useradd --system --no-create-home --shell /usr/sbin/nologin --groups video splitpoint"; \
	echo "  chgrp splitpoint $(SYSCONFDIR)/splitpoint/gateway.toml $(SYSCONFDIR)/splitpoint/pi.toml $(SYSCONFDIR)/splitpoint/cloud.toml"; \
	echo "and start the units this host runs (splitpoint-gateway, splitpoint-device, splitpoint-cloudproc), e.g.:"; \
	echo "  systemctl daemon-reload && systemctl enable --now splitpoint-gateway"

vet: deps
	$(GO) vet ./...
	$(GO) vet -tags matprofile ./...
	$(GO) vet -tags system ./e2e/

staticcheck: deps tools
	$(TOOLS)/staticcheck ./...
	$(TOOLS)/staticcheck -tags system ./e2e/

fmt:
	@test -z "$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || { echo "gofmt needed:"; gofmt -l .; exit 1; }

# Everything CI runs: lint, then unit, codec, fuzz-corpus and end-to-end
# tests with the race detector and gocv's Mat leak profile, then the long
# system tests.
test: EXTRA_DEBS = $(TEST_DEBS)
test: deps tools vet staticcheck fmt
	$(GO) test -race -tags matprofile -count=1 -timeout 30m ./...
	$(MAKE) --no-print-directory test-mochi-patch
	$(MAKE) --no-print-directory test-system

# The patched copy of mochi the gateway builds (third_party/mochi-mqtt-server,
# PATCHES.md): the patch's own tests and mochi's packets tests. (mochi's
# whole suite has timing-dependent tests that fail now and then on the
# unpatched release too: PATCHES.md.)
test-mochi-patch:
	cd third_party/mochi-mqtt-server && $(GO) vet . ./packets && \
		$(GO) test -race -count=1 ./packets && \
		$(GO) test -race -count=1 -run '^(TestWritePacketLargePublish|TestReadPacketDecodesInPlace)$$' .

# The long system tests (build tag "system"): the thin uplink through
# network namespaces and tc tbf (needs root; SPLITPOINT_SKIP_NETNS=1 opts
# out, loudly).
test-system: EXTRA_DEBS = $(TEST_DEBS)
test-system: deps
	$(GO) test -race -tags 'matprofile system' -count=1 -timeout 20m -run '^TestSystem' -v ./e2e/

# The developer's inner loop: lint and every package's tests but the
# end-to-end ones, without the race detector.
check: deps tools vet staticcheck fmt
	$(GO) test -count=1 $$($(GO) list ./... | grep -v /e2e$$)

# gateway + cloudproc + one device (synthetic source at 30 fps, CPU emulated
# 12× slower, automatic split, target 25 fps).
# Stops on Ctrl-C, or after DURATION seconds: make demo DURATION=30
demo: build
	DURATION=$(DURATION) ./scripts/demo.sh

# Per-stage and codec benchmarks, then cmd/bench's report: a plain OpenCV
# loop vs the real binaries at every split, and the gateway's broker vs
# mosquitto vs raw TCP (medians of interleaved rounds; README: Benchmarks).
# make bench BENCHFLAGS='-rounds 5 -profile prof' passes flags to it.
bench: EXTRA_DEBS = $(TEST_DEBS)
bench: deps
	# A fixed count: each iteration first builds the stage's input state
	# with the timer stopped (~3 ms), so for the fastest stages the default
	# -benchtime 1s would run a million iterations, about an hour.
	$(GO) test -run '^$$' -bench . -benchmem -benchtime 300x ./tasks/... ./wire/...
	$(GO) run ./cmd/bench $(BENCHFLAGS)

# The split controller's simulation report (deterministic, virtual clock).
sim:
	$(GO) run ./cmd/simulate

fuzz: deps
	$(GO) test ./wire -run '^$$' -fuzz FuzzDecode -fuzztime 60s

clean:
	rm -rf bin .tools
