"""Fixtures of the fault tests: Celery workers on a private broker that a test may kill, and a
Redis server of the test's own that it may stop.

Every process here listens on or connects to loopback only, and every wait is bounded. Nothing
touches the shared Redis on 6379: a test that stops a broker stops its own.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
from celery import Celery

from preference_app.core.models import Candidate, Comparison, Conversation, Judgment, ModelVersion, TrainingRound, Turn
from tests.conftest import REPO_ROOT, TEST_OUTPUT, child_environment, wait_for

WORKER_READY_SECONDS = 90


def a_round_ready_to_train(tiny_model_dir, annotator, *, status: str, pairs: int, config: dict) -> TrainingRound:
    """A round at the start of a training step, serving the tiny model, with `pairs` comparisons of a
    short against a long reply that `annotator` judged (the short one better)."""
    base = ModelVersion.objects.create(name="base:tiny", kind="policy", path=str(tiny_model_dir),
                                       base_model_id="tiny", is_serving=True)
    training_round = TrainingRound.objects.create(number=1, status=status, config=config, step="Queued")
    for number in range(pairs):
        conversation = Conversation.objects.create(source="prompt")
        Turn.objects.create(conversation=conversation, index=0, role="user", text=f"Name a colour, please ({number}).")
        short, long = (Candidate.objects.create(conversation=conversation, context_length=1, text=text, model_version=base)
                       for text in ("Blue.", "Well, one colour that many people like a great deal is blue."))
        comparison = Comparison.objects.create(conversation=conversation, context_length=1, candidate_a=short,
                                               candidate_b=long, training_round=training_round)
        Judgment.objects.create(comparison=comparison, annotator=annotator, choice="a", strength=3, left_candidate="a")
    return training_round


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PrivateBroker:
    """A filesystem broker in a folder of the test's own, so only the test's workers see its tasks.

    The suite's shared worker (tests/conftest.py) consumes the configured broker; sending the fault
    tests' tasks elsewhere keeps it from picking up a step that a test means to kill mid-way.
    """

    def __init__(self, root: Path):
        self.var_dir = root
        self.queue = root / "broker" / "queue"
        self.processed = root / "broker" / "processed"
        self.queue.mkdir(parents=True, exist_ok=True)
        self.processed.mkdir(parents=True, exist_ok=True)
        self.app = Celery("fault-test-sender", broker="filesystem://", set_as_current=False)
        self.app.conf.broker_transport_options = {
            "data_folder_in": str(self.queue), "data_folder_out": str(self.queue),
            "processed_folder": str(self.processed), "store_processed": False,
            "control_folder": str(root / "broker" / "control"),
        }

    @property
    def models_dir(self) -> Path:
        # The worker's settings put MODELS_DIR under its VAR_DIR, which is this folder.
        return self.var_dir / "models"

    def send(self, task_name: str, *args, queue: str) -> None:
        self.app.send_task(task_name, args=list(args), queue=queue)

    def environment(self, **extra: str) -> dict[str, str]:
        env = child_environment()
        for name in ("REDIS_URL", "CELERY_BROKER_URL"):
            env.pop(name, None)
        env["VAR_DIR"] = str(self.var_dir)
        env.update(extra)
        return env


@contextmanager
def worker_process(env: dict[str, str], *, name: str, queues: str = "default,training"):
    """A `celery worker` of `queues` with its own log under test-output/; killed on exit if still running."""
    log_path = TEST_OUTPUT / "reliability" / f"{name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "preference_app", "worker", "--pool", "solo",
             "--queues", queues, "--loglevel", "INFO", "--without-heartbeat", "--without-gossip",
             "--without-mingle", "--hostname", f"{name}@%h"],
            cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
        try:
            wait_for(lambda: process.poll() is not None or "ready." in log_path.read_text(),
                     timeout=WORKER_READY_SECONDS, message=f"worker {name} to start (see {log_path})")
            if process.poll() is not None:
                raise RuntimeError(f"The worker {name} exited at start-up; see {log_path}.")
            yield process
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=10)


@pytest.fixture
def private_broker(tmp_path) -> PrivateBroker:
    return PrivateBroker(tmp_path / "var")


class RedisServer:
    """A redis-server of the test's own on a free loopback port, which the test may stop and restart."""

    def __init__(self, port: int, log_path: Path):
        self.port, self.log_path = port, log_path
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--daemonize", "no", "--logfile", str(self.log_path)],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )
        wait_for(self._answers, timeout=20, message=f"redis-server on port {self.port}")

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None


@pytest.fixture
def redis_server():
    if not _on_path("redis-server"):
        pytest.skip("redis-server is not installed (Debian package redis-server).")
    log_path = TEST_OUTPUT / "reliability" / "redis-server.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    server = RedisServer(free_port(), log_path)
    server.start()
    yield server
    server.stop()


def _on_path(program: str) -> bool:
    return any((Path(folder) / program).is_file() for folder in os.environ.get("PATH", "").split(os.pathsep))


class LiveApp:
    """gunicorn serving the app from the test database, and requests sessions signed in as users.

    Sessions are created in the database by the test process and handed to the client as cookies;
    logging in through the form would only add password hashing to what is being tested.
    """

    def __init__(self, port: int):
        self.url = f"http://127.0.0.1:{port}"

    def session_for(self, user) -> requests.Session:
        from django.test import Client

        signed_in = Client()
        signed_in.force_login(user)
        session = requests.Session()
        session.cookies.set("sessionid", signed_in.cookies["sessionid"].value)
        # Django accepts any 32-character secret as the CSRF cookie, and the same value as the header.
        session.cookies.set("csrftoken", CSRF_SECRET)
        session.headers["X-CSRFToken"] = CSRF_SECRET
        return session


CSRF_SECRET = "reliabilitytestsecret0123456789a"


@contextmanager
def live_app(env: dict[str, str], *, name: str):
    """gunicorn on a free loopback port with `env`; stopped on exit."""
    port = free_port()
    log_path = TEST_OUTPUT / "reliability" / f"{name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "preference_app.wsgi", "--bind", f"127.0.0.1:{port}",
             "--workers", "1", "--threads", "8", "--timeout", "60"],
            cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
        app = LiveApp(port)
        try:
            wait_for(lambda: process.poll() is not None or _answers(f"{app.url}/health/"), timeout=60,
                     message=f"gunicorn to answer (see {log_path})")
            if process.poll() is not None:
                raise RuntimeError(f"gunicorn exited at start-up; see {log_path}.")
            yield app
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False
