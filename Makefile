# Two commands on a fresh Debian machine with python3 and make: `make demo` and `make test`.
PYTHON ?= python3
# python3 keeps .venv; another interpreter gets a venv of its own, named by its version, so that
# several coexist: `make test PYTHON=~/.pyenv/versions/3.13.0/bin/python3` uses .venv-3.13.
VERSION_OF = $(shell $(1) -c 'import sys; print("%d.%d" % sys.version_info[:2])')
VENV ?= $(if $(filter python3,$(PYTHON)),.venv,.venv-$(call VERSION_OF,$(PYTHON)))
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-deps sshd bench lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/tether demo

# The end-to-end tests need OpenSSH's sshd; as root we install it, otherwise the tests say how.
sshd:
	@if [ ! -x /usr/sbin/sshd ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing openssh-server for the end-to-end tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server; \
	fi

# Beyond sshd the tests need systemd-analyze (the tests of `tether systemd-unit` check its units;
# Debian's systemd package runs nothing by being installed in a container), jq (a README example
# uses it), iproute2's ip (network namespaces: a link that goes down, a private resolver) and
# haproxy (relays behind a balancer: the tests run their own haproxy in the foreground, and the
# package's service is neither needed nor started by them); as root we install what is missing.
test-deps: sshd
	@missing=""; \
	command -v systemd-analyze >/dev/null || missing="$$missing systemd"; \
	command -v jq >/dev/null || missing="$$missing jq"; \
	command -v ip >/dev/null || missing="$$missing iproute2"; \
	command -v haproxy >/dev/null || missing="$$missing haproxy"; \
	if [ -n "$$missing" ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing$$missing for the tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

test: $(STAMP) test-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# bench/outage.py and bench/gateway_failover.py need root (network namespaces): said, and skipped.
bench: $(STAMP) sshd
	@missing=""; for tool in socat gcc redis-server autossh; do command -v $$tool >/dev/null || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ] && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi
	PYTHONPATH=. $(BIN)/python bench/relays.py
	PYTHONPATH=. $(BIN)/python bench/socksproxy.py
	PYTHONPATH=. $(BIN)/python bench/lifecycle.py
	PYTHONPATH=. $(BIN)/python bench/gateway.py
	@# 500 sessions through one relay: a few minutes (--sessions 2000 as well: about 12 more).
	PYTHONPATH=. $(BIN)/python -W ignore bench/gateway_capacity.py --sessions 500
	@if [ "$$(id -u)" = 0 ]; then PYTHONPATH=. $(BIN)/python bench/outage.py && \
		PYTHONPATH=. $(BIN)/python -W ignore bench/gateway_failover.py --tunnels 200; \
	else echo "bench/outage.py, bench/gateway_failover.py need root (network namespaces): not run"; fi

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy src tests bench

clean:
	rm -rf .venv .venv-* build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
