# opsgate: `make run` starts the demo console, `make test` runs the test suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: run test bench clean system-deps lint-imports

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	touch $@

# System packages the tests talk to for real (OpenSSH sshd, oathtool, rsyslogd with its TLS driver); installed only when missing, as root.
system-deps:
	@missing=""; \
	[ -x /usr/sbin/sshd ] || missing="$$missing openssh-server"; \
	command -v oathtool >/dev/null || missing="$$missing oathtool"; \
	[ -x /usr/sbin/rsyslogd ] || missing="$$missing rsyslog"; \
	ls /usr/lib/*/rsyslog/lmnsd_gtls.so /usr/lib/rsyslog/lmnsd_gtls.so 2>/dev/null | grep -q . || missing="$$missing rsyslog-gnutls"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "not root: cannot install$$missing (the tests that need them will be skipped)"; fi; \
	fi

run: $(VENV)/.installed
	$(BIN)/opsgate demo

# import-linter reads packages from disk; .lint/opsgate is the installed layout as links to the folders.
lint-imports: $(VENV)/.installed-test
	@rm -rf .lint && mkdir -p .lint/opsgate && for d in cli console screens actions; do ln -s ../../$$d .lint/opsgate/$$d; done
	PYTHONPATH=.lint $(BIN)/lint-imports --no-cache

test: $(VENV)/.installed-test system-deps lint-imports
	$(BIN)/python -m pytest -q

bench: $(VENV)/.installed-test system-deps
	$(BIN)/pip install -q -e '.[test,bench]'
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .lint
