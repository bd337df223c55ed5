# toworker — every target installs what it needs by itself.
SHELL := /bin/bash
export PATH := $(PATH):/usr/local/go/bin:$(HOME)/go/bin
GO ?= go
# The Go release the project builds and tests with: the machine's own Go
# fetches it from the module proxy once (about 10 s). 1.26.9 fixes a
# standard-library issue govulncheck reports for 1.26.8.
export GOTOOLCHAIN := go1.26.9
VULNDB_VERSION ?= v0.0.0-20261105234957-e22db6528018
STATICCHECK_VERSION ?= v0.8.2
GOVULNCHECK_VERSION ?= v1.9.0

.PHONY: all setup tools test test-short lint vulncheck demo bench bench-smoke agents build fuzz clean

all: build

# setup installs OpenSSH's server and client when missing (tests and the demo
# start their own sshd on loopback; nothing else of the machine's is used).
setup:
	@if [ ! -x /usr/sbin/sshd ] || ! command -v ssh >/dev/null; then \
		echo "installing openssh-server and openssh-client"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server openssh-client >/dev/null; \
	fi
	@command -v gzip >/dev/null || (apt-get update -qq && apt-get install -y -qq gzip >/dev/null)
	@command -v busybox >/dev/null || { echo "installing busybox-static (the bootstrap under busybox's shell and tools)"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq busybox-static >/dev/null; }
	@for p in zsh tcsh fish sudo; do command -v $$p >/dev/null || m="$$m $$p"; done; command -v doas >/dev/null || m="$$m opendoas"; [ -z "$$m" ] || { echo "installing$$m (login shell and Become tests)"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$m >/dev/null; }

tools:
	@command -v staticcheck >/dev/null || $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	@command -v govulncheck >/dev/null || $(GO) install golang.org/x/vuln/cmd/govulncheck@$(GOVULNCHECK_VERSION)

# The CLI, which is also the agent it uploads, is built without cgo: a
# static binary runs on any Linux host whatever its libc, and starts faster
# (no dynamic loader: about 7% off a 10-host cold fan-out here).
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags="-s -w" -o bin/toworker ./cmd/toworker

lint: tools
	test -z "$$(gofmt -l .)" || (gofmt -l . && false)
	$(GO) vet ./...
	staticcheck ./...
	@# The agent platforms of make agents still build, examples included
	@# (they are not tested here).
	for p in darwin/arm64 freebsd/amd64; do GOOS=$${p%/*} GOARCH=$${p#*/} CGO_ENABLED=0 $(GO) build ./... || exit 1; done
	$(MAKE) vulncheck

# govulncheck against a database built locally from golang.org/x/vulndb's
# OSV files (fetched through the module proxy): vuln.go.dev is not reachable
# from these machines.
vulncheck: tools
	$(GO) mod download golang.org/x/vulndb@$(VULNDB_VERSION)
	$(GO) run ./internal/cmd/mkvulndb -osv "$$($(GO) env GOMODCACHE)/golang.org/x/vulndb@$(VULNDB_VERSION)/data/osv" -out bin/vulndb
	govulncheck -db file://$(CURDIR)/bin/vulndb ./...

# The test command of the README and of CI.
test: setup lint
	$(GO) test -race -count=1 -timeout 20m ./...
	$(MAKE) bench-smoke

test-short: setup
	$(GO) test -count=1 ./...

# The main job on an embedded default: a throwaway sshd on loopback, a
# registered function run on it with a callback and prefixed output.
demo: setup
	CGO_ENABLED=0 $(GO) run ./examples/demo

agents:
	@mkdir -p bin/agents
	for p in linux/amd64 linux/arm64 darwin/amd64 darwin/arm64 freebsd/amd64; do \
		CGO_ENABLED=0 GOOS=$${p%/*} GOARCH=$${p#*/} $(GO) build -trimpath -ldflags="-s -w" -o bin/agents/agent-$${p%/*}-$${p#*/} ./cmd/toworker || exit 1; \
	done

bench: setup build
	CGO_ENABLED=0 $(GO) run ./bench/cmd/benchlab -out bench/results

bench-smoke: setup build
	CGO_ENABLED=0 $(GO) run ./bench/cmd/benchlab -smoke -out $$(mktemp -d)

# fuzz runs every fuzz target (func FuzzX in a _test.go file) for FUZZTIME.
FUZZTIME ?= 10s
fuzz:
	@set -e; for pkg in $$(grep -rl --include='*_test.go' '^func Fuzz' . | xargs -n1 dirname | sort -u); do \
		for f in $$(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' $$pkg/*_test.go); do \
			echo "fuzz $$pkg $$f ($(FUZZTIME))"; \
			$(GO) test -run='^$$' -fuzz="^$$f$$" -fuzztime=$(FUZZTIME) $$pkg; \
		done; \
	done

clean:
	rm -rf bin
