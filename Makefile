# turnscale: `make run` starts the embedded default, `make test` runs the whole suite.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
# Debian packages whose binaries the tests and benchmarks run for real.
DEBIAN_TOOLS := coturn prometheus prometheus-pushgateway podman runc debootstrap chromium nftables iproute2
TOOL_BINARIES := turnserver turnutils_uclient turnutils_peer prometheus promtool prometheus-pushgateway podman runc debootstrap chromium nft ip

.PHONY: run test lint typecheck unit bench tools proto dashboards image screenshot clean

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "turnscale needs Python >= 3.11 (set PYTHON=...)")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test]'
	@touch $(STAMP)

tools:
	@missing=""; for b in $(TOOL_BINARIES); do command -v $$b >/dev/null 2>&1 || missing="$$missing $$b"; done; \
	command -v kubectl >/dev/null 2>&1 || echo "kubectl (>= 1.27, with kustomize) is missing: the manifest tests compare against 'kubectl kustomize'; install it from the Kubernetes apt repository"; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing Debian packages for:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(DEBIAN_TOOLS) >/dev/null; \
	else \
		echo "missing tools:$$missing"; \
		echo "  install them with: sudo apt-get install -y $(DEBIAN_TOOLS)"; \
		echo "  (tests that need them are skipped locally and fail in CI)"; \
	fi

run: $(STAMP)
	$(VENV)/bin/turnscale run

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-cache

typecheck: $(STAMP)
	$(VENV)/bin/mypy

unit: $(STAMP) tools
	$(VENV)/bin/pytest -q

test: lint typecheck unit

# Debian packages only the benchmarks run: HAProxy terminates TLS in front of the relay in
# the TLS bench (its rows are left out without it).
BENCH_TOOLS := haproxy

bench: $(STAMP) tools
	@command -v haproxy >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "installing Debian packages for the benchmarks: $(BENCH_TOOLS)"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(BENCH_TOOLS) >/dev/null; \
		else \
			echo "missing for the benchmarks: haproxy (sudo apt-get install -y $(BENCH_TOOLS)); its rows are left out"; \
		fi; }
	$(PY) -m tests.bench

# The container image, built offline with podman from a Debian-built base (tests/image).
image: $(STAMP) tools
	$(PY) -m tests.image.podman

# Regenerate the KEDA externalscaler stubs (commit the result; a test checks it is current).
proto: $(STAMP)
	$(PY) -m scaler.keda.codegen

# Regenerate the Grafana dashboards and Prometheus rules (commit the result; a test checks it
# is current). Phony: the target shares its name with the dashboards/ directory.
dashboards: $(STAMP)
	$(PY) -m dashboards.generate

# Take docs/ice-tester.png again: the ICE tester after a successful run in headless Chromium
# (commit the result; a test checks it was taken from the page's current source).
screenshot: $(STAMP) tools
	$(PY) -m tests.browser.screenshot

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
