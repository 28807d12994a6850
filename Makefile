# Tandem: `make run` starts the system on this machine, `make test` runs every test.
SHELL := /bin/bash
GO ?= go
GOBIN := $(shell $(GO) env GOPATH)/bin
STRIPE_MOCK_VERSION := v0.203.0
BENCH_ARGS ?=

.PHONY: help up tools docker build image run test bench bench-image lint

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

up: ## make sure MariaDB and RabbitMQ answer (start or install them)
	@scripts/services.sh

tools: ## install stripe-mock (Stripe's request-shape checker) for the contract tests, and chromium for the console test
	@test -x $(GOBIN)/stripe-mock || $(GO) install github.com/stripe/stripe-mock@$(STRIPE_MOCK_VERSION)
	@scripts/chromium.sh

docker: ## install Docker (Debian's docker.io) when missing, for `image` and the container test
	@scripts/docker.sh

build: ## build every command into bin/
	@mkdir -p bin && $(GO) build -o bin/ ./cmd/...

IMAGE ?= tandem:dev
image: docker ## build the container image $(IMAGE) (deploy/Dockerfile: static binaries FROM scratch)
	@IMAGE=$(IMAGE) scripts/image.sh

run: up build ## start the system (api, webhook, a worker per provider, the Stripe sandbox; Ctrl-C stops it)
	@scripts/run.sh

# One short fuzzing run per request decoder (their committed corpora in
# testdata/fuzz also run as plain tests above): JSON bodies, Stripe webhook
# deliveries, Salesforce Outbound Messages. A count, not a duration: with a
# duration, Go 1.26's fuzz coordinator can fail a target with "context
# deadline exceeded" when the time runs out during an input on a loaded
# machine (golang/go#75804, fixed in Go 1.27); a count has no deadline.
FUZZTIME ?= 5000x
FUZZ_TARGETS := FuzzParseCreate:./internal/api FuzzParsePatch:./internal/api \
	FuzzWebhook:./internal/webhook FuzzParseOutboundMessage:./internal/integrations/salesforce

test: up tools docker ## run all tests against the real MariaDB and RabbitMQ, then fuzz each request decoder for $(FUZZTIME)
	PATH="$(GOBIN):$$PATH" $(GO) test -race -count=1 -timeout 20m ./...
	@for t in $(FUZZ_TARGETS); do \
		echo "fuzz $${t%%:*} ($(FUZZTIME))"; \
		$(GO) test -run '^$$' -fuzz "^$${t%%:*}$$" -fuzztime $(FUZZTIME) "$${t#*:}" || exit 1; \
	done

bench: up tools ## measure each stage against its raw ceiling and print a table
	PATH="$(GOBIN):$$PATH" $(GO) run ./cmd/bench $(BENCH_ARGS)

bench-image: up docker ## image size, cold start to ready and RSS of each process in a container
	$(GO) test -run '^$$' -bench Image -benchtime 1x -timeout 10m ./deploy/container

lint: ## gofmt and go vet
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...
