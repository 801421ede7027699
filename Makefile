GO ?= go
# Packages whose tests run in CI; everything.
PKGS ?= ./...
# Fuzz budgets are counts of inputs, not durations: with -fuzztime=15s Go's
# fuzz coordinator can race its own deadline and fail a target with
# "context deadline exceeded" and no crasher (golang/go#75804, fixed in Go
# 1.27); a count (Nx) has no deadline to race.
FUZZTIME ?= 50000x

.PHONY: test demo demo-failover deps deps-postgres deps-patroni deps-dnsmasq test-deps chaos-pgbouncer vet fmt-check unit unit-pgx-oldest fuzz bench cluster soak
.PHONY: test-busy sim-soak compose-image compose-up compose-down compose-ctl compose-test chaos-compose

## test: vet, format check, every test under the race detector, a short fuzz run
test: deps test-deps vet fmt-check unit unit-pgx-oldest chaos-pgbouncer fuzz compose-test

## test-busy: make test while a CPU burner per core keeps every core busy (tests wait for outcomes, not for fixed times)
test-busy:
	sh ./scripts/busy.sh $(MAKE) test

## demo: the library's main job on an embedded local cluster
demo: deps-postgres
	$(GO) run ./examples/quickstart

## demo-failover: a live failover under load: the master is killed, the client re-routes
demo-failover: deps-postgres
	$(GO) run ./examples/failover-demo

## cluster: start a local replicated cluster and keep it up until Ctrl-C
cluster: deps-postgres
	$(GO) run ./testcluster/cmd/testcluster

## deps: everything the tests need (PostgreSQL, Patroni with etcd for the Patroni backend, dnsmasq for the discovery tests)
deps: deps-postgres deps-patroni deps-dnsmasq

# The demos, the cluster and the benchmarks need PostgreSQL only.
deps-postgres:
	@./scripts/ensure-postgres.sh

deps-patroni:
	@./scripts/ensure-patroni.sh

deps-dnsmasq:
	@./scripts/ensure-dnsmasq.sh

# What only the tests need: PgBouncer, for testcluster's PgBouncer option.
test-deps:
	@./scripts/ensure-pgbouncer.sh

# Chaos scenarios with a PgBouncer in front of every node, in each pool
# mode (hasql's TestThroughPgBouncer, in unit, crashes the master behind
# both).
PGBOUNCER_CHAOS_TESTS = ^(TestMasterHangFailover|TestMasterPartitionFailover)$$

## chaos-pgbouncer: failover chaos scenarios through PgBouncer (session and transaction mode)
chaos-pgbouncer: deps test-deps
	PGXHA_TESTCLUSTER_PGBOUNCER=session $(GO) test -race -count=1 -timeout 20m -run '$(PGBOUNCER_CHAOS_TESTS)' ./failover/
	PGXHA_TESTCLUSTER_PGBOUNCER=transaction $(GO) test -race -count=1 -timeout 20m -run '$(PGBOUNCER_CHAOS_TESTS)' ./failover/

vet:
	$(GO) vet $(PKGS)

fmt-check:
	@out=$$(gofmt -l .); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

# One package at a time: every package starts real clusters (Patroni's are
# heavy), and two at once on two cores make their timings those of a
# starved machine; the total is about the same.
unit:
	$(GO) test -p 1 -race -count=1 -timeout 30m $(PKGS)

# The oldest pgx the module supports (see README, "Supported versions"):
# the packages that use pgx's API, built and tested against it too. The
# pgxold tag leaves out tests of what older pgx lacks.
PGX_OLDEST_MODFILE := .ci/pgx-oldest/go.mod
# In hasql, the tests of what touches pgx's API (parsing, acquiring, routed
# statements, batches, transactions, LSNs, database/sql, LISTEN, check
# connections, credentials, the pool's lifetime left to pgxpool); the rest
# of the suite runs once, on the newest.
PGX_OLDEST_HASQL_TESTS = ^(TestParseConfig|TestConnLifetimeReusesConnections|TestOptions|TestNewWithConfig|TestConfigCopy|TestRedact|TestManager|TestDatabaseSQL|TestListenFollowsTheMaster|TestCheckConnection|TestCredentials|TestClientCertificate|TestReadYourWritesAsyncCommit|TestNoRerunOfMasterStatement|TestAcquireWaitingInDemotedPool|TestDBConnectRevalidates|TestWaitReplayed|TestDeadPooledSessions|TestNodeLost)
# It runs on the oldest Go the module supports too (go.mod's go line), a
# toolchain the go command fetches through the module proxy once.
GO_OLDEST ?= go1.25.0
unit-pgx-oldest:
	GOTOOLCHAIN=$(GO_OLDEST) $(GO) vet -modfile=$(PGX_OLDEST_MODFILE) -tags pgxold $(PKGS)
	GOTOOLCHAIN=$(GO_OLDEST) $(GO) test -modfile=$(PGX_OLDEST_MODFILE) -tags pgxold -race -count=1 -timeout 20m ./checker/ ./balancer/
	GOTOOLCHAIN=$(GO_OLDEST) $(GO) test -modfile=$(PGX_OLDEST_MODFILE) -tags pgxold -race -count=1 -timeout 20m \
		-run '$(PGX_OLDEST_HASQL_TESTS)' ./hasql/

fuzz:
	@grep -rl --include='*_test.go' '^func Fuzz' . | while read -r f; do \
		dir=$$(dirname $$f); \
		for fn in $$(grep -h '^func Fuzz' $$f | sed 's/^func \(Fuzz[A-Za-z0-9_]*\).*/\1/'); do \
			echo "fuzz $$dir $$fn ($(FUZZTIME))"; \
			$(GO) test -run '^$$' -fuzz "^$$fn\$$" -fuzztime $(FUZZTIME) $$dir || exit 1; \
		done; \
	done

## bench: benchmarks (timings for the README; not part of test)
bench: deps-postgres
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)

## soak: the randomized fault schedule for $(SOAK) (default 10m; not part of test)
SOAK ?= 10m
## sim-soak: the decision core's simulation through many more fault schedules (SIM_SCHEDULES, default 100000)
SIM_SCHEDULES ?= 100000
sim-soak:
	$(GO) test -count=1 -timeout 2h -v -run '^TestSimulation$$' ./hasql/internal/topology/ -args -sim.schedules=$(SIM_SCHEDULES)

soak: deps-postgres
	PGXHA_SOAK=$(SOAK) $(GO) test -race -count=1 -timeout 2h -v -run '^TestFaultSchedule$$' ./failover/

# The compose cluster (docker-compose.replication.yml), on an image built here
# from Debian's packages (PGXHA_PG_IMAGE names another). The scripts run
# through sh: in Go's module cache they are not executable.
COMPOSE_IMAGE ?= pgxha/postgres:15-debian
PGXHA_PG_IMAGE ?= $(COMPOSE_IMAGE)
export PGXHA_PG_IMAGE
COMPOSE_SH := sh ./testcluster/compose/compose.sh
# Builds the local image when it is the one in use and missing.
COMPOSE_IMAGE_IF_LOCAL = $(if $(filter $(COMPOSE_IMAGE),$(PGXHA_PG_IMAGE)),sh ./testcluster/compose/build-image.sh $(COMPOSE_IMAGE),true)

## compose-image: build the PostgreSQL image from Debian's packages (skipped when it exists)
compose-image:
	@sh ./testcluster/compose/build-image.sh $(COMPOSE_IMAGE)

## compose-up: start the compose cluster (project pgxha) and print its DSN
compose-up:
	@$(COMPOSE_IMAGE_IF_LOCAL)
	@$(COMPOSE_SH) up

## compose-down: remove the compose cluster: no container, network or volume is left
compose-down:
	@$(COMPOSE_SH) down

# The project compose-up starts and compose-ctl works on.
PGXHA_COMPOSE_PROJECT ?= pgxha

## compose-ctl: a chaos command on the compose cluster, e.g. make compose-ctl CMD='kill n1' (CMD=help lists them; see docs/compose.md)
compose-ctl:
	@$(GO) run ./testcluster/cmd/testcluster -attach $(PGXHA_COMPOSE_PROJECT) $(or $(CMD),status)

# The failover chaos scenarios (the Patroni one and RunInTx's run in unit).
CHAOS_TESTS = ^(TestMaster|TestReplicaFaults|TestSplitBrain|TestAllNodes|TestOldMaster|TestKernelLiveness)

## compose-test: the compose backend's tests and the chaos scenarios against compose, when a Docker engine answers
compose-test:
	@if ! $(COMPOSE_SH) engine; then \
		echo "compose tests skipped: no Docker engine answers (docker info)"; \
	else \
		$(COMPOSE_IMAGE_IF_LOCAL) && \
		PGXHA_COMPOSE=1 $(GO) test -race -count=1 -timeout 20m -run Compose ./testcluster/ && \
		PGXHA_TESTCLUSTER=compose PGXHA_COMPOSE=1 $(GO) test -race -count=1 -timeout 10m -run TestAgainstCluster ./cmd/pgxha/ && \
		PGXHA_TESTCLUSTER=compose PGXHA_COMPOSE=1 $(GO) test -race -count=1 -timeout 30m -run '$(CHAOS_TESTS)' ./failover/; \
	fi

## chaos-compose: the compose backend's tests, pgxha status and the failover chaos suite against compose
chaos-compose:
	@$(COMPOSE_IMAGE_IF_LOCAL)
	PGXHA_TESTCLUSTER=compose PGXHA_COMPOSE=1 $(GO) test -race -count=1 -timeout 30m -run Compose ./testcluster/
	PGXHA_TESTCLUSTER=compose PGXHA_COMPOSE=1 $(GO) test -race -count=1 -timeout 10m -run TestAgainstCluster ./cmd/pgxha/
	PGXHA_TESTCLUSTER=compose PGXHA_COMPOSE=1 $(GO) test -race -count=1 -timeout 30m ./failover/...
