"""Settings come from the environment; bad or missing production values fail with a clear message."""

import os
import subprocess
import sys

import pytest
from django.core.exceptions import ImproperlyConfigured

from preference_app.env import env_bool, env_int, env_list
from tests.conftest import REPO_ROOT


def run_django(env_overrides: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": "/tmp",
        "VAR_DIR": str(REPO_ROOT / "var" / "test" / "settings-check"),
        **env_overrides,
    }
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_env_bool_accepts_common_spellings(monkeypatch):
    monkeypatch.setenv("FLAG", "Yes")
    assert env_bool("FLAG", False) is True
    monkeypatch.setenv("FLAG", "off")
    assert env_bool("FLAG", True) is False


def test_env_bool_rejects_a_typo_naming_the_variable(monkeypatch):
    monkeypatch.setenv("FLAG", "ture")
    with pytest.raises(ImproperlyConfigured, match="FLAG"):
        env_bool("FLAG", False)


def test_env_int_rejects_non_numbers(monkeypatch):
    monkeypatch.setenv("WORKERS", "four")
    with pytest.raises(ImproperlyConfigured, match="WORKERS must be an integer"):
        env_int("WORKERS", 1)


def test_env_list_splits_on_commas_and_drops_blanks(monkeypatch):
    monkeypatch.setenv("HOSTS", "a.example, b.example,,")
    assert env_list("HOSTS", []) == ["a.example", "b.example"]


def test_defaults_give_sqlite_and_filesystem_broker_in_var():
    result = run_django(
        {},
        "shell",
        "-c",
        "from django.conf import settings as s; print(s.DATABASES['default']['ENGINE']); print(s.CELERY_BROKER_URL); print(s.CELERY_RESULT_BACKEND)",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-3:] == ["django.db.backends.sqlite3", "filesystem://", "django-db"]


def test_database_url_and_redis_url_select_postgres_and_redis():
    result = run_django(
        {"DATABASE_URL": "postgresql://u@db.internal:5433/prefs", "REDIS_URL": "redis://cache:6379/2"},
        "shell",
        "-c",
        "from django.conf import settings as s; d=s.DATABASES['default']; print(d['ENGINE'], d['HOST'], d['PORT'], d['NAME']); print(s.CELERY_BROKER_URL)",
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()[-2:]
    assert lines == ["django.db.backends.postgresql db.internal 5433 prefs", "redis://cache:6379/2"]


def test_production_without_secret_key_fails_with_a_clear_error():
    result = run_django({"DEBUG": "false", "ALLOWED_HOSTS": "prefs.example"}, "check")
    assert result.returncode != 0
    assert "SECRET_KEY must be set when DEBUG is off" in result.stderr


def test_production_without_allowed_hosts_fails_with_a_clear_error():
    result = run_django({"DEBUG": "false", "SECRET_KEY": "x" * 60}, "check")
    assert result.returncode != 0
    assert "ALLOWED_HOSTS must be set" in result.stderr


def test_check_deploy_is_clean_in_production_settings():
    result = run_django(
        {"DEBUG": "false", "SECRET_KEY": "k3y-" + "abcdefghij" * 6, "ALLOWED_HOSTS": "prefs.example"},
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_development_secret_key_is_generated_once_and_kept(tmp_path):
    show_key = ["shell", "-c", "from django.conf import settings; print(settings.SECRET_KEY)"]
    first = run_django({"VAR_DIR": str(tmp_path)}, *show_key)
    second = run_django({"VAR_DIR": str(tmp_path)}, *show_key)
    assert first.returncode == 0, first.stderr
    assert len(first.stdout.split()[-1]) >= 50
    assert first.stdout.split()[-1] == second.stdout.split()[-1]
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0


def production_request_is_secure(extra_env: dict[str, str]) -> str:
    result = run_django(
        {"DEBUG": "false", "SECRET_KEY": "k3y-" + "abcdefghij" * 6, "ALLOWED_HOSTS": "prefs.example", **extra_env},
        "shell",
        "-c",
        "from django.test import RequestFactory; "
        "print(RequestFactory().get('/', HTTP_X_FORWARDED_PROTO='https').is_secure())",
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split()[-1]


def test_a_client_cannot_claim_https_unless_a_proxy_is_trusted_to_say_so():
    assert production_request_is_secure({}) == "False"
    assert production_request_is_secure({"TRUST_X_FORWARDED_PROTO": "true"}) == "True"


@pytest.mark.parametrize("setting, expected", [("", str(max(1, (os.cpu_count() or 2) // 2))), ("3", "3")])
def test_a_worker_process_gives_torch_its_share_of_the_cores(setting, expected):
    """What a Celery pool child runs when it starts: torch then uses WORKER_TORCH_THREADS threads,
    by default half the host's cores (two workers share the host)."""
    overrides = {"WORKER_TORCH_THREADS": setting} if setting else {}
    result = run_django(
        overrides,
        "shell",
        "-c",
        "import torch; from preference_app.celery import torch_threads_set; torch.set_num_threads(7); "
        "torch_threads_set(); print(torch.get_num_threads())",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-1] == expected
