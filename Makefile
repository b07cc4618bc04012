# Two entry points for a newcomer: `make run` (install and start the app) and `make test` (install and test).
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: run test lint system-packages clean

run: system-packages
	@if command -v nvidia-smi >/dev/null 2>&1; then req=requirements.txt; else req=requirements-cpu.txt; fi; \
	test -x $(PY) || python3 -m venv $(VENV); \
	$(PY) -m pip install -q -r $$req && $(PY) -m pip install -q --no-deps -e . && $(PY) app.py

# The tests also need what packages-test.txt lists (Chromium for the browser tests; skip those with
# make test PYTEST_ARGS="-m 'not browser'").
test: PACKAGE_LISTS += packages-test.txt
test: $(VENV)/.test-installed system-packages
	$(PY) -m ruff check .
	$(PY) -m pytest $(PYTEST_ARGS)

$(VENV)/.test-installed: requirements-test.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -r requirements-test.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

# Debian packages listed in packages.txt (the same file a Hugging Face Space reads), plus packages-test.txt for `test`.
PACKAGE_LISTS := packages.txt
system-packages:
	@missing=""; for p in $$(grep -hv '^#' $(PACKAGE_LISTS)); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends $$missing; \
	fi

lint:
	$(PY) -m ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
