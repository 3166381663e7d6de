# brine: two static binaries. bin/brine is everything (master, operator CLI, minion, demo);
# bin/brine-minion is the minion alone, what hosts run (docs/design.md, "The minion binary").
# `make demo` shows it working, `make test` proves it.
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
BIN     := bin/brine
MINION  := bin/brine-minion
export CGO_ENABLED := 0

.PHONY: build deps deb test demo bench lint clean

build:
	$(GO) build -trimpath -ldflags "-s -w -X main.version=$(VERSION)" -o $(BIN) ./cmd/brine
	$(GO) build -trimpath -ldflags "-s -w -X main.version=$(VERSION)" -o $(MINION) ./cmd/brine-minion

# dist/brine_VERSION_ARCH.deb: /usr/bin/brine, /usr/bin/brine-minion, the units,
# /etc/brine/*.hcl (scripts/mkdeb.sh).
deb: build
	./scripts/mkdeb.sh $(BIN) dist $(VERSION) $(MINION)

# The Debian packages the tests and the demo use (installed when missing; needs root then).
deps:
	@./scripts/deps.sh

# The whole suite. Tests that need root or namespaces skip with a reason where unavailable
# (they fail instead when BRINE_REQUIRE_REAL is set, as .ci/run does).
# Packages run one at a time (-p 1): many build real clusters, tincd meshes and swarms, and on
# two cores their timing (tinc's reconnects above all) should not depend on what else runs.
# The concurrent core (master, minion, control socket, wire, keys) runs again under the race detector.
test: deps build lint
	$(GO) test -p 1 -count=1 -timeout 40m ./...
	CGO_ENABLED=1 $(GO) test -race -short -count=1 -timeout 20m ./master/ ./minion/ ./control/ ./pki/ ./internal/... ./states/...

demo: deps build
	./scripts/demo.sh

bench: build
	./scripts/bench.sh

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

clean:
	rm -rf bin
