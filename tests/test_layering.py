"""The project's shape holds: apps import downwards only, training stands alone, and the web tier
runs without torch (the contracts are in .importlinter)."""

import json
import os
import subprocess
import sys

from importlinter.cli import lint_imports

from tests.conftest import REPO_ROOT

# What a gunicorn worker loads before and while it serves: the WSGI application (every app, model
# and admin module), every view the URLconf reaches, every template tag library, and the task
# modules whose tasks a request enqueues.
WEB_TIER_PROBE = """
import json, sys
import preference_app.wsgi
from django.template import engines
from django.urls import get_resolver
from django.utils.module_loading import autodiscover_modules

get_resolver().url_patterns
engines["django"].engine.template_libraries
autodiscover_modules("tasks")
print(json.dumps(sorted(name for name in ("torch", "transformers") if name in sys.modules)))
"""


def test_the_import_contracts_are_kept(capsys):
    exit_code = lint_imports(config_filename=str(REPO_ROOT / ".importlinter"), no_cache=True)
    assert exit_code == 0, capsys.readouterr().out


def test_the_web_tier_imports_neither_torch_nor_transformers():
    # A fresh interpreter: this test process has long imported torch for the training tests.
    probe = subprocess.run(
        [sys.executable, "-c", WEB_TIER_PROBE], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "PYTHONPATH": str(REPO_ROOT)},
    )
    assert probe.returncode == 0, probe.stderr
    assert json.loads(probe.stdout.splitlines()[-1]) == []
