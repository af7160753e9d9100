# Every target installs what it needs into .venv/ (and the test control plane into
# ~/.cache/gitopsd-testenv) from a fresh clone.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: all venv tools cluster cluster-down test unit lint demo bench soak dist clean screenshots

all: test

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

tools: venv
	bash tests/testenv/build.sh >/dev/null
	PYTHON=$(PY) bash tests/testenv/install-helm.sh >/dev/null
	bash tests/testenv/install-prometheus.sh >/dev/null
	bash tests/testenv/install-registry.sh >/dev/null
	bash tests/testenv/install-chromium.sh >/dev/null

cluster: tools
	$(PY) tests/testenv/cluster.py up .cluster

cluster-down: venv
	$(PY) tests/testenv/cluster.py down .cluster

test: tools
	$(PY) -m pytest

# The README's status-page screenshots, taken by the browser test.
screenshots: tools
	GITOPSD_SCREENSHOTS=docs/screenshots $(PY) -m pytest tests/integration/test_status_page.py

unit: venv
	$(PY) -m pytest tests/unit

lint: venv
	$(VENV)/bin/ruff check daemon tests bench scripts packaging
	$(VENV)/bin/ruff format --check daemon tests bench scripts packaging
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

demo: tools
	$(PY) scripts/demo.py

bench: tools
	$(PY) bench/bench_sync.py; s1=$$?; $(PY) bench/bench_daemon.py; s2=$$?; \
	$(PY) bench/bench_scale.py; s3=$$?; exit $$((s1 | s2 | s3))

# Longer fault campaigns than `make test` runs (CI keeps to a few rounds).
soak: tools
	GITOPSD_CRASH_ROUNDS=$${GITOPSD_CRASH_ROUNDS:-30} $(PY) -m pytest tests/crash tests/faults -v

dist: venv
	$(PY) -m pip install --quiet 'pyinstaller>=6.10,<7'
	$(PY) -m PyInstaller --noconfirm --log-level WARN --distpath dist \
		--workpath build/pyinstaller packaging/gitopsd.spec

clean:
	rm -rf build dist .pytest_cache .mypy_cache .ruff_cache
