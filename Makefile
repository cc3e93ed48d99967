# Two commands for a newcomer: `make demo` and `make test`.
# Both create their virtualenvs on first use; nothing else needs installing.

PYTHON ?= python3
VENV := .venv
VENV_DJANGO42 := .venv-django42
PIP_FLAGS := --quiet --disable-pip-version-check

.PHONY: demo test lint bench bench-e2e browser services clean

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install $(PIP_FLAGS) --upgrade pip
	$(VENV)/bin/pip install $(PIP_FLAGS) -e ".[uvloop,test,lint]" "django>=5.2,<5.3"
	touch $@

$(VENV_DJANGO42)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV_DJANGO42)
	$(VENV_DJANGO42)/bin/pip install $(PIP_FLAGS) --upgrade pip
	$(VENV_DJANGO42)/bin/pip install $(PIP_FLAGS) -e ".[uvloop,test]" "django>=4.2,<4.3"
	touch $@

# The example project under gunicorn on http://127.0.0.1:8000/ until Ctrl-C
# (example_project/demo.py: migrate, staff user, upstream server, gunicorn).
demo: $(VENV)/.installed
	cd example_project && exec ../$(VENV)/bin/python demo.py

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy django_looptoken
	$(VENV)/bin/lint-imports

# Debian's Chromium and ChromeDriver for the status page's browser test,
# installed when missing and make runs as root (CI); otherwise the test says how.
browser:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	else \
		echo "The browser test needs Debian's chromium and chromium-driver:" \
			"sudo apt-get install chromium chromium-driver"; \
	fi

# Debian's redis-server and PostgreSQL, which the docs' recipes run against
# (tests/test_docs.py starts throwaway servers on free 127.0.0.1 ports);
# installed when missing and make runs as root (CI); otherwise it says how.
services:
	@if command -v redis-server >/dev/null && ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-upgrade redis-server postgresql; \
	else \
		echo "The docs' recipes need Debian's redis-server and postgresql:" \
			"sudo apt-get install redis-server postgresql"; \
	fi

# A uWSGI from before threads were on by default (2.0.27), for the test that
# the app refuses to start its loop there and says which option to add.
UWSGI_THREADS_OFF := .uwsgi-2.0.26
$(UWSGI_THREADS_OFF)/bin/uwsgi: $(VENV)/.installed
	$(VENV)/bin/pip install $(PIP_FLAGS) --no-deps --target $(UWSGI_THREADS_OFF) "uwsgi==2.0.26"

# Every check: lint, strict typing, and the suite on Django 5.2 and 4.2 LTS.
test: lint $(VENV_DJANGO42)/.installed browser services $(UWSGI_THREADS_OFF)/bin/uwsgi
	PYTHONDEVMODE=1 $(VENV)/bin/python -m pytest
	PYTHONDEVMODE=1 $(VENV_DJANGO42)/bin/python -m pytest

# bench_e2e's load generator is wrk, bench_instructions' and bench_tasks' counter valgrind:
# Debian's packages (apt-get needs root).
WRK := command -v wrk >/dev/null || { apt-get update && apt-get install -y wrk; }
VALGRIND := command -v valgrind >/dev/null || { apt-get update && apt-get install -y valgrind; }

bench: $(VENV)/.installed
	$(WRK)
	$(VENV)/bin/pip install $(PIP_FLAGS) -e ".[bench]"
	$(VENV)/bin/python bench/bench_await.py --json bench/results/bench_await.json
	$(VENV)/bin/python bench/bench_status.py
	$(VENV)/bin/python bench/bench_scrape.py
	$(VENV)/bin/python bench/bench_stream.py
	$(VENV)/bin/python bench/bench_scaling.py --breakdown --json bench/results/bench_scaling.json
	$(VENV)/bin/python bench/bench_scaling.py --greenlets --breakdown --json bench/results/bench_scaling_greenlets.json
	$(VENV)/bin/python bench/bench_gevent.py --json bench/results/bench_gevent.json
	$(VENV)/bin/python bench/bench_gevent.py --server eventlet --json bench/results/bench_eventlet.json
	$(VENV)/bin/python bench/bench_e2e.py --json bench/results/bench_e2e.json
	$(VALGRIND)
	$(VENV)/bin/python bench/bench_instructions.py
	$(VENV)/bin/python bench/bench_tasks.py
	$(VENV)/bin/python bench/feature_table.py --json bench/results/feature_table.json
	$(VENV)/bin/python bench/chart.py

# Only the end-to-end benchmark (gunicorn, an aiohttp upstream, wrk): about 15 minutes.
bench-e2e: $(VENV)/.installed
	$(WRK)
	$(VENV)/bin/pip install $(PIP_FLAGS) -e ".[bench]"
	$(VENV)/bin/python bench/bench_e2e.py

clean:
	rm -rf $(VENV) $(VENV_DJANGO42) $(UWSGI_THREADS_OFF) build *.egg-info example_project/db.sqlite3
