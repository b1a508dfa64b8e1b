# Bulwark — the two commands a newcomer needs are `make dev` and `make test`.
GO        ?= go
PKGS      := ./...
STATICCHECK_VERSION := v0.8.2

.PHONY: dev test race test-deps lint fmt build bench fuzz tidy-check

## dev: run the whole platform on loopback with an embedded SQLite store (./.bulwark)
dev:
	$(GO) run ./cmd/bulwark dev

## test: start what the tests need (SoftHSM2, Redis, PostgreSQL), then run every test with the race detector
test: test-deps
	$(GO) test -race -count=1 -timeout 20m $(PKGS)

## race: the same tests with the race detector, without touching services
race:
	$(GO) test -race -count=1 -timeout 20m $(PKGS)

## test-deps: install or start SoftHSM2, Redis and PostgreSQL for the tests
test-deps:
	./scripts/test-deps.sh

## lint: gofmt, go vet, staticcheck and go mod tidy must all be clean
lint: tidy-check
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) $(PKGS)

tidy-check:
	@cp go.mod /tmp/bulwark-go.mod.bak; cp go.sum /tmp/bulwark-go.sum.bak; \
	$(GO) mod tidy; \
	if ! cmp -s go.mod /tmp/bulwark-go.mod.bak || ! cmp -s go.sum /tmp/bulwark-go.sum.bak; then \
	  echo "go mod tidy changed go.mod/go.sum: commit the tidy result"; exit 1; fi

fmt:
	gofmt -w $$(git ls-files '*.go')

## build: the bulwark binary in ./bin
build:
	$(GO) build -o bin/bulwark ./cmd/bulwark

## bench: the benchmark harnesses; prints the figures quoted in bench/README.md
bench: test-deps
	./bench/run.sh

## fuzz: a short run of every fuzz target (FUZZTIME each, default 20s)
FUZZTIME ?= 20s
fuzz:
	./scripts/fuzz.sh $(FUZZTIME)
