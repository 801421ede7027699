GO ?= go
# Packages whose tests run in CI; everything.
PKGS ?= ./...
FUZZTIME ?= 15s

.PHONY: test demo deps vet fmt-check unit fuzz bench cluster

## test: vet, format check, every test under the race detector, a short fuzz run
test: deps vet fmt-check unit fuzz

## demo: the library's main job on an embedded local cluster
demo: deps
	$(GO) run ./examples/quickstart

## cluster: start a local replicated cluster and keep it up until Ctrl-C
cluster: deps
	$(GO) run ./testcluster/cmd/testcluster

deps:
	@./scripts/ensure-postgres.sh

vet:
	$(GO) vet $(PKGS)

fmt-check:
	@out=$$(gofmt -l .); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

unit:
	$(GO) test -race -count=1 -timeout 30m $(PKGS)

fuzz:
	@grep -rl --include='*_test.go' '^func Fuzz' . | while read -r f; do \
		dir=$$(dirname $$f); \
		for fn in $$(grep -h '^func Fuzz' $$f | sed 's/^func \(Fuzz[A-Za-z0-9_]*\).*/\1/'); do \
			echo "fuzz $$dir $$fn ($(FUZZTIME))"; \
			$(GO) test -run '^$$' -fuzz "^$$fn\$$" -fuzztime $(FUZZTIME) $$dir || exit 1; \
		done; \
	done

## bench: benchmarks (timings for the README; not part of test)
bench: deps
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)
