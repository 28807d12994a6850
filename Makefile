# Tandem: `make run` starts the system on this machine, `make test` runs every test.
SHELL := /bin/bash
GO ?= go
GOBIN := $(shell $(GO) env GOPATH)/bin
STRIPE_MOCK_VERSION := v0.203.0
BENCH_ARGS ?=

.PHONY: help up tools build run test bench lint

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-8s %s\n", $$1, $$2}'

up: ## make sure MariaDB and RabbitMQ answer (start or install them)
	@scripts/services.sh

tools: ## install stripe-mock (Stripe's request-shape checker) for the contract tests, and chromium for the console test
	@test -x $(GOBIN)/stripe-mock || $(GO) install github.com/stripe/stripe-mock@$(STRIPE_MOCK_VERSION)
	@scripts/chromium.sh

build: ## build every command into bin/
	@mkdir -p bin && $(GO) build -o bin/ ./cmd/...

run: up build ## start the system (api, webhook, a worker per provider, the Stripe sandbox; Ctrl-C stops it)
	@scripts/run.sh

FUZZTIME ?= 5s
# One short fuzzing run per request decoder (their committed corpora in
# testdata/fuzz also run as plain tests above): JSON bodies, Stripe webhook
# deliveries, Salesforce Outbound Messages.
FUZZ_TARGETS := FuzzParseCreate:./internal/api FuzzParsePatch:./internal/api \
	FuzzWebhook:./internal/webhook FuzzParseOutboundMessage:./internal/integrations/salesforce

test: up tools ## run all tests against the real MariaDB and RabbitMQ, then fuzz each request decoder for $(FUZZTIME)
	PATH="$(GOBIN):$$PATH" $(GO) test -race -count=1 -timeout 20m ./...
	@for t in $(FUZZ_TARGETS); do \
		echo "fuzz $${t%%:*} ($(FUZZTIME))"; \
		$(GO) test -run '^$$' -fuzz "^$${t%%:*}$$" -fuzztime $(FUZZTIME) "$${t#*:}" || exit 1; \
	done

bench: up tools ## measure each stage against its raw ceiling and print a table
	PATH="$(GOBIN):$$PATH" $(GO) run ./cmd/bench $(BENCH_ARGS)

lint: ## gofmt and go vet
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...
