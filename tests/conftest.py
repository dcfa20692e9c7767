"""Fixtures shared by the whole suite: tiny models, users in each role, and a real Celery worker."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.core.cache import caches
from django.db import connection

from preference_app.core import roles
from preference_app.core.models import Candidate, Comparison, Conversation, Turn
from training.tiny import build_tiny_causal_lm

REPO_ROOT = Path(__file__).resolve().parent.parent
TEST_OUTPUT = REPO_ROOT / "test-output"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_causal_lm(tmp_path_factory.mktemp("models") / "tiny-policy", seed=0)


@pytest.fixture(autouse=True)
def caches_cleared():
    """Forget what the web process remembered: tests reuse user ids, and one test's figures are not another's.

    Both caches are local memory under tests/settings.py. The default one holds leaderboards keyed on
    judgment counts and ids, which a rolled-back test hands on to the next: without clearing, a test
    could be shown another test's board.
    """
    caches["process"].clear()
    caches["default"].clear()


def make_user(username: str, role: str | None, **extra):
    # Transactional tests flush every table afterwards, the role groups made by migrate included;
    # recreating them here keeps each test independent of which kind of test ran before it.
    roles.roles_ensure(Group, Permission)
    user = get_user_model().objects.create_user(username=username, password="correct horse battery", **extra)
    if role:
        user.groups.add(Group.objects.get(name=role))
    return user


@pytest.fixture
def annotator(db):
    return make_user("ann", roles.ANNOTATOR)


@pytest.fixture
def researcher(db):
    return make_user("res", roles.RESEARCHER)


@pytest.fixture
def admin_user(db):
    return make_user("boss", roles.ADMIN, is_staff=True)


@pytest.fixture
def comparison(db):
    conversation = Conversation.objects.create(source=Conversation.Source.PROMPT)
    Turn.objects.create(conversation=conversation, index=0, role=Turn.Role.USER, text="Hello?")
    first = Candidate.objects.create(conversation=conversation, context_length=1, text="Hi.")
    second = Candidate.objects.create(conversation=conversation, context_length=1, text="Hello there.")
    return Comparison.objects.create(conversation=conversation, context_length=1, candidate_a=first, candidate_b=second)


def database_url_for_current_connection() -> str:
    """The URL of the database the tests are using (the test database), for child processes."""
    settings_dict = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{settings_dict['NAME']}"
    user = quote(settings_dict.get("USER") or "")
    password = f":{quote(settings_dict['PASSWORD'])}" if settings_dict.get("PASSWORD") else ""
    credentials = f"{user}{password}@" if user else ""
    port = f":{settings_dict['PORT']}" if settings_dict.get("PORT") else ""
    return f"postgresql://{credentials}{settings_dict.get('HOST') or '127.0.0.1'}{port}/{settings_dict['NAME']}"


def child_environment() -> dict[str, str]:
    env = dict(os.environ)
    env["DATABASE_URL"] = database_url_for_current_connection()
    env["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    env["PYTHONPATH"] = str(REPO_ROOT)
    # One torch thread per worker: on two cores the test process, the web server and the worker
    # compete, and two-thread matmuls on tiny models spend more time waiting than computing.
    env["OMP_NUM_THREADS"] = "1"
    return env


# The suite's one worker serves every queue: live chat, batch work and training.
QUEUES = "chat,default,training"


@pytest.fixture(scope="session")
def celery_worker(django_db_setup, django_db_blocker):
    """A real `celery worker` process consuming every queue from the configured broker.

    Messages left in the broker by an earlier, interrupted run are purged first, so the worker only
    sees this run's tasks.
    """
    from preference_app.celery import app

    with django_db_blocker.unblock():
        env = child_environment()
    app.control.purge()
    # One log per test run: parallel runs (other state directories) must not read each other's "ready".
    log_path = TEST_OUTPUT / f"celery-worker-{os.getpid()}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = log_path.open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "preference_app", "worker", "--pool", "solo",
         "--queues", QUEUES, "--loglevel", "INFO", "--without-heartbeat", "--without-gossip",
         "--without-mingle"],
        cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"The Celery worker exited at start-up; see {log_path}.")
        if "ready." in log_path.read_text():
            break
        time.sleep(0.5)
    else:
        process.kill()
        raise RuntimeError(f"The Celery worker did not become ready in 90 s; see {log_path}.")
    yield process
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()


def wait_for(condition, *, timeout: float, interval: float = 0.25, message: str = "condition"):
    """Poll `condition` until it returns something truthy, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"Timed out after {timeout} s waiting for {message}.")
