# streamtap: `make demo` and `make test` work on a fresh clone; both run `make install` first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Prism is Beam's local streaming runner (a Go program); built from the Go module proxy because
# Beam's own download comes from GitHub releases, which these machines cannot reach.
PRISM_VERSION := v2.77.0
PRISM := .prism/prism
# Real services the tests start: an Icecast radio station fed by ffmpeg, kcat as an independent
# Kafka consumer, a Prometheus server that scrapes a capture's metrics; Kafka itself runs on
# Java with jars Maven fetches.
APT_PACKAGES := icecast2 ffmpeg kcat prometheus
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)
# The tests also run the Airflow DAG (airflow/dags/) in a real Airflow: the `airflow` extra, which
# `make install` and `make demo` leave out (~165 MB more).
AIRFLOW := $(VENV)/.airflow-installed

.PHONY: install demo test test-deps bench clean

install: $(BIN)/streamtap $(PRISM)

$(BIN)/streamtap: pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

$(PRISM):
	@command -v go >/dev/null || { echo "Go is needed to build Prism (https://go.dev/dl)"; exit 1; }
	GOBIN=$(CURDIR)/.prism GOFLAGS=-mod=mod go install github.com/apache/beam/sdks/v2/go/cmd/prism@$(PRISM_VERSION)

test-deps:
	@missing=""; \
	for package in $(APT_PACKAGES); do dpkg -s $$package >/dev/null 2>&1 || missing="$$missing $$package"; done; \
	command -v javac >/dev/null || missing="$$missing openjdk-17-jdk-headless"; \
	command -v mvn >/dev/null || missing="$$missing maven"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

demo: install
	rm -rf capture
	$(BIN)/streamtap demo --duration 20 --output ./capture

$(AIRFLOW): $(BIN)/streamtap
	$(BIN)/pip install --quiet -e '.[test,airflow]'
	touch $@

test: install $(AIRFLOW) test-deps
	$(BIN)/python -m pytest

# Every scenario of BENCHMARKS.md (~30 min; `$(BIN)/python -m benchmarks --quick` for ~5 min).
bench: install test-deps
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) .prism .streamtap capture *.egg-info
