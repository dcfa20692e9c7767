"""Load on the annotation pages: N simulated annotators against gunicorn and PostgreSQL on loopback.

    .venv/bin/python bench/annotate_load.py [--annotators 50] [--seconds 30] [--think-ms 3000]

What it does:
1. Recreates a dedicated PostgreSQL database (--database, `annotate_bench` by default), migrates it
   and seeds annotators and comparisons (bulk_create; every comparison wants --overlap judgments).
2. Starts gunicorn (gthread) with production settings (DEBUG off) on 127.0.0.1.
3. Runs one thread per annotator, each on its own keep-alive connection, doing what the browser does
   with htmx: GET /annotate/ (fetch the next comparison), think, POST the judgment (whose answer is the
   next comparison). A share of submits (--double-submit) is sent twice at once, as a double click
   would; the second must be answered "already judged" and stored nowhere.
4. Prints judgments/s and latency percentiles, then checks the database: every acknowledged
   judgment is stored exactly once, nothing unacknowledged is stored, no comparison has more
   judgments than its overlap target, and every double submit stored one row.

With --chats N the run has two halves of --seconds each: the annotators alone, then the annotators
while N live chats stream their replies, each polling its replies' text twice a second and its phase
once a second as the chat page does. The worker is simulated by a writer thread that grows every
chat's partial replies (--chat-words-per-second) in the database, as the chat worker does every
0.25 s, so what is measured is the web tier's cost of streaming, not the model's (bench/generate.py
measures that). The annotators' p95 in the two halves is printed side by side.

Think time is what an annotator spends reading; real people take 10-60 s per comparison, so the
default of about 3 s (uniform 1.5-4.5 s) makes each simulated annotator 3-20 times busier than a
person; --think-ms 0 measures the server flat out. The process
exits non-zero when any request failed or any database check did not hold.

Sessions are written straight into the database rather than logged in through the login form:
the form would spend the run hashing 50 passwords, which is not what is being measured.
"""

from __future__ import annotations

import argparse
import http.client
import os
import random
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode, urlparse

REPO = Path(__file__).resolve().parent.parent
COMPARISON_ID = re.compile(r'data-comparison-id="(\d+)"')
SAVED = "Saved. Here is the next one."
ALREADY = "You had already judged that comparison"
PREFERENCES = [str(point) for point in range(1, 9)] + ["tie", "both_bad"]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--annotators", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=30.0, help="how long the annotators work")
    parser.add_argument("--think-ms", type=float, default=3000.0, help="mean pause between fetch and submit")
    parser.add_argument("--overlap", type=int, default=2, help="judgments wanted per comparison")
    parser.add_argument("--comparisons", type=int, default=0, help="seeded comparisons (default: enough for the run)")
    parser.add_argument("--double-submit", type=float, default=0.05, help="share of submits sent twice at once")
    parser.add_argument("--database", default="postgresql://postgres@127.0.0.1:5432/annotate_bench")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--workers", type=int, default=3, help="gunicorn worker processes")
    parser.add_argument("--threads", type=int, default=4, help="threads per gunicorn worker")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards for inspection")
    parser.add_argument("--chats", type=int, default=0, help="live chats streaming in the second half of the run")
    parser.add_argument("--chat-words-per-second", type=float, default=20.0, help="simulated writing speed per reply")
    return parser.parse_args()


def server_environment(database_url: str, var_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="preference_app.settings",
        DATABASE_URL=database_url,
        # Persistent connections, as a production deployment would use.
        DATABASE_CONN_MAX_AGE="600",
        DEBUG="false",
        SECRET_KEY=secrets.token_urlsafe(50),
        ALLOWED_HOSTS="127.0.0.1",
        # Plain HTTP on loopback: no redirect to HTTPS.
        SECURE_SSL_REDIRECT="false",
        VAR_DIR=str(var_dir),
        LOG_LEVEL="WARNING",
        PYTHONPATH=str(REPO),
    )
    # The chats' generation tasks go to a filesystem broker in the run's own folder, where no worker
    # takes them: the writer thread plays the worker.
    env.pop("REDIS_URL", None)
    env.pop("CELERY_BROKER_URL", None)
    return env


def database_recreate(database_url: str) -> None:
    import psycopg

    url = urlparse(database_url)
    name = url.path.lstrip("/")
    maintenance = url._replace(path="/postgres").geturl()
    with psycopg.connect(maintenance, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{name}"')


def database_drop(database_url: str) -> None:
    import psycopg

    url = urlparse(database_url)
    with psycopg.connect(url._replace(path="/postgres").geturl(), autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{url.path.lstrip("/")}" WITH (FORCE)')


def seed(*, annotators: int, comparisons: int, overlap: int, chatters: int = 0) -> list[tuple[int, str]]:
    """Create annotators (and `chatters` more, last) with sessions and comparisons to judge; returns
    (user id, session key) per user. With chatters, a policy is marked serving, so chats can open."""
    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
    from django.contrib.auth.hashers import make_password
    from django.contrib.auth.models import Group
    from django.contrib.sessions.backends.db import SessionStore

    from preference_app.core import roles
    from preference_app.core.models import Candidate, Comparison, Conversation, ModelVersion, Turn

    User = get_user_model()
    password = make_password("bench password")  # Hashed once and shared: hashing is slow on purpose.
    users = User.objects.bulk_create(User(username=f"bench{n:03d}", password=password)
                                     for n in range(annotators + chatters))
    if chatters:
        ModelVersion.objects.create(name="bench-policy", kind=ModelVersion.Kind.POLICY, path="/nowhere",
                                    base_model_id="bench", is_serving=True)
    Group.objects.get(name=roles.ANNOTATOR).user_set.add(*users)

    conversations = Conversation.objects.bulk_create(
        Conversation(source=Conversation.Source.PROMPT) for _ in range(comparisons)
    )
    Turn.objects.bulk_create(
        Turn(conversation=conversation, index=0, role=Turn.Role.USER, text=f"Question {n}: how do I keep basil alive?")
        for n, conversation in enumerate(conversations)
    )
    reply = "Water it when the top centimetre of soil is dry, give it sun, and pinch off the flowers. " * 3
    candidates = Candidate.objects.bulk_create(
        Candidate(conversation=conversation, context_length=1, text=f"{side} {reply}")
        for conversation in conversations
        for side in ("First.", "Second.")
    )
    Comparison.objects.bulk_create(
        Comparison(
            conversation=conversation,
            context_length=1,
            candidate_a=candidates[2 * n],
            candidate_b=candidates[2 * n + 1],
            overlap_target=overlap,
        )
        for n, conversation in enumerate(conversations)
    )

    sessions = []
    backend = settings.AUTHENTICATION_BACKENDS[0]
    for user in users:
        session = SessionStore()
        session[SESSION_KEY] = str(user.pk)
        session[BACKEND_SESSION_KEY] = backend
        session[HASH_SESSION_KEY] = user.get_session_auth_hash()
        session.create()
        sessions.append((user.pk, session.session_key))
    return sessions


def port_free(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def gunicorn_start(env: dict[str, str], args: argparse.Namespace, log_path: Path) -> subprocess.Popen:
    if not port_free(args.port):
        raise RuntimeError(f"Something already listens on 127.0.0.1:{args.port}; pass another --port.")
    log = log_path.open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "preference_app.wsgi:application",
         "--bind", f"127.0.0.1:{args.port}", "--workers", str(args.workers), "--threads", str(args.threads),
         "--worker-class", "gthread", "--keep-alive", "30", "--log-level", "warning"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        gunicorn_wait_ready(process, args, log_path)
    except BaseException:
        gunicorn_stop(process)
        raise
    return process


def gunicorn_wait_ready(process: subprocess.Popen, args: argparse.Namespace, log_path: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited at start-up; see {log_path}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", args.port, timeout=2)
            connection.request("GET", "/health/")
            response = connection.getresponse()
            response.read()
            if response.status == 200:
                # Every worker answers a few times before the clock starts, so imports are not
                # measured. A keep-alive connection stays with one worker, so each warm-up request
                # opens a new connection and gunicorn hands them to all of its workers.
                for _ in range(args.workers * 8):
                    warm = http.client.HTTPConnection("127.0.0.1", args.port, timeout=30)
                    warm.request("GET", "/health/")
                    warm.getresponse().read()
                    warm.close()
                return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"gunicorn did not answer within 60 s; see {log_path}")


def gunicorn_stop(process: subprocess.Popen) -> None:
    """Stop the arbiter and its workers (their own process group, started for this)."""
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)


HALVES = ("alone", "with chats")


@dataclass
class Tally:
    """What one simulated annotator saw; merged after the run."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: {"fetch": [], "submit": []})
    # Every fetch and submit latency again, by the half of the run it was measured in.
    by_half: dict[str, list[float]] = field(default_factory=lambda: {half: [] for half in HALVES})
    acknowledged: list[int] = field(default_factory=list)  # Comparison ids answered "Saved".
    doubles: int = 0  # Submits sent twice.
    doubles_calm: int = 0  # Second copies answered "already judged".
    errors: Counter = field(default_factory=Counter)
    empty_queue: int = 0


class Annotator(threading.Thread):
    def __init__(self, *, port: int, session_key: str, deadline: float, args, rng: random.Random,
                 half_starts: float | None = None):
        super().__init__(daemon=True)
        self.port, self.deadline, self.args, self.rng = port, deadline, args, rng
        self.half_starts = half_starts  # When the chats start streaming; None without chats.
        self.csrf = secrets.token_hex(16)  # 32 characters: Django accepts an unmasked secret.
        self.headers = {
            "Cookie": f"sessionid={session_key}; csrftoken={self.csrf}",
            "X-CSRFToken": self.csrf,
            "HX-Request": "true",
        }
        self.tally = Tally()
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def request(self, kind: str, method: str, path: str, body: str | None = None, connection=None) -> str | None:
        connection = connection or self.connection
        headers = dict(self.headers)
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        started = time.perf_counter()
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            text = response.read().decode()
        except (OSError, http.client.HTTPException) as error:
            self.tally.errors[f"{kind}: {type(error).__name__}"] += 1
            connection.close()
            return None
        latency = time.perf_counter() - started
        self.tally.latencies.setdefault(kind, []).append(latency)
        if kind in ("fetch", "submit") and self.half_starts is not None:
            self.tally.by_half[HALVES[time.monotonic() >= self.half_starts]].append(latency)
        if response.status not in self.expected_statuses(kind):
            self.tally.errors[f"{kind}: HTTP {response.status}"] += 1
            return None
        return text

    def expected_statuses(self, kind: str) -> tuple[int, ...]:
        return (200,)

    def submit_twice(self, path: str, body: str) -> tuple[str | None, str | None]:
        """Send the same judgment on two connections at once, as a double click does."""
        second_connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        answers: list[str | None] = [None]
        twin = threading.Thread(target=lambda: answers.__setitem__(0, self.request("submit", "POST", path, body, second_connection)))
        twin.start()
        first = self.request("submit", "POST", path, body)
        twin.join()
        second_connection.close()
        return first, answers[0]

    def run(self) -> None:
        # People do not all open the page in the same millisecond: arrivals spread over one think time.
        time.sleep(self.rng.uniform(0, self.args.think_ms / 1000))
        while time.monotonic() < self.deadline:
            page = self.request("fetch", "GET", "/annotate/")
            if page is None:
                continue
            found = COMPARISON_ID.search(page)
            if not found:
                self.tally.empty_queue += 1
                time.sleep(0.5)
                continue
            comparison_id = int(found.group(1))
            time.sleep(self.rng.uniform(0.5, 1.5) * self.args.think_ms / 1000)
            body = urlencode({"preference": self.rng.choice(PREFERENCES), "rationale": "bench"})
            path = f"/annotate/{comparison_id}/judge/"
            if self.rng.random() < self.args.double_submit:
                self.tally.doubles += 1
                answers = [answer for answer in self.submit_twice(path, body) if answer is not None]
                saved = sum(SAVED in answer for answer in answers)
                calm = sum(ALREADY in answer for answer in answers)
                self.tally.doubles_calm += calm == 1
            else:
                answer = self.request("submit", "POST", path, body)
                saved = int(answer is not None and SAVED in answer)
                if answer is not None and not saved:
                    self.tally.errors["submit: answered without saving"] += 1
            if saved:
                self.tally.acknowledged.extend([comparison_id] * saved)


class Chatter(Annotator):
    """A person in a live chat while its replies are written: opens the chat, then polls the replies'
    text every 0.5 s and the chat's phase every second, as the chat page does with htmx."""

    def __init__(self, *, starts: float, username: str, **kwargs):
        super().__init__(**kwargs)
        self.starts, self.username = starts, username
        self.draft_sizes: list[int] = []

    def expected_statuses(self, kind: str) -> tuple[int, ...]:
        # The phase poll answers 204 while the phase stays "generating"; opening a chat redirects.
        return {"open chat": (302,), "phase poll": (204,)}.get(kind, (200,))

    def run(self) -> None:
        time.sleep(max(0.0, self.starts - time.monotonic()) + self.rng.uniform(0, 1))
        headers = self.headers
        self.headers = {name: value for name, value in headers.items() if name != "HX-Request"}
        self.request("open chat", "POST", "/annotate/chat/", urlencode({"text": "Tell me about owls."}))
        self.headers = headers
        from preference_app.core.models import Conversation

        conversation = Conversation.objects.filter(annotator__username=self.username).order_by("-id").first()
        if conversation is None:
            self.tally.errors["open chat: no conversation stored"] += 1
            return
        polls = 0
        while time.monotonic() < self.deadline:
            drafts = self.request("drafts", "GET", f"/annotate/chat/{conversation.pk}/drafts/")
            if drafts is not None:
                self.draft_sizes.append(len(drafts))
            if polls % 2 == 0:
                self.request("phase poll", "GET", f"/annotate/chat/{conversation.pk}/?unless=generating")
            polls += 1
            time.sleep(0.5)


def replies_written(*, stop: threading.Event, words_per_second: float, interval: float = 0.25) -> None:
    """Play the chat worker: every `interval` grow the partial replies of every chat batch in the
    database, as generation_batch_run does while a chat's replies are written."""
    from django.db import connection
    from django.utils import timezone

    from preference_app.core.models import GenerationBatch

    words = 0.0
    while not stop.wait(interval):
        words += words_per_second * interval
        text = " ".join(["Owls hunt at night and their feathers are soft, so they fly without a sound."] * 100)
        partial = text[: int(words * 6)]
        GenerationBatch.objects.exclude(status=GenerationBatch.Status.DONE).update(
            status=GenerationBatch.Status.RUNNING, claimed=timezone.now(), progress=min(0.99, words / 500),
            partial_replies=[partial, partial],
        )
    connection.close()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def milliseconds(values: list[float]) -> str:
    if not values:
        return "no requests"
    return (
        f"p50 {percentile(values, .50) * 1000:6.1f} ms   p95 {percentile(values, .95) * 1000:6.1f} ms   "
        f"p99 {percentile(values, .99) * 1000:6.1f} ms   max {max(values) * 1000:6.1f} ms   n={len(values)}"
    )


def database_checks(acknowledged: dict[int, list[int]], annotator_ids: list[int]) -> list[tuple[str, bool, str]]:
    """Compare what the clients were told with what the database holds."""
    from django.db.models import Count, F

    from preference_app.core.models import Comparison, Judgment

    stored = Counter(
        Judgment.objects.filter(annotator_id__in=annotator_ids).values_list("annotator_id", "comparison_id")
    )
    told = Counter((user, comparison) for user, comparisons in acknowledged.items() for comparison in comparisons)
    lost = [pair for pair in told if pair not in stored]
    told_twice = [pair for pair, count in told.items() if count > 1]
    duplicated = [pair for pair, count in stored.items() if count > 1]
    unacknowledged = [pair for pair in stored if pair not in told]
    over_target = Comparison.objects.annotate(n=Count("judgments")).filter(n__gt=F("overlap_target")).count()
    return [
        ("acknowledged judgments all stored (none lost)", not lost, f"{len(lost)} lost of {sum(told.values())}"),
        ("no judgment stored twice", not duplicated and not told_twice,
         f"{len(duplicated)} duplicated rows, {len(told_twice)} acknowledged twice"),
        ("nothing stored that was not acknowledged", not unacknowledged, f"{len(unacknowledged)} unacknowledged rows"),
        ("no comparison over its overlap target", over_target == 0, f"{over_target} comparisons over target"),
    ]


def main() -> int:
    args = parse_args()
    rng = random.Random(args.seed)
    comparisons = args.comparisons or max(1000, int(args.annotators * args.seconds / max(args.think_ms / 1000, 0.05) * 2))
    var_dir = Path(tempfile.mkdtemp(prefix="annotate-bench-"))
    env = server_environment(args.database, var_dir)
    os.environ.update(env)  # This process seeds and checks the same database through Django.
    sys.path.insert(0, str(REPO))

    print(f"Database {args.database}: recreating, migrating, seeding {comparisons} comparisons "
          f"(overlap {args.overlap}) and {args.annotators} annotators")
    database_recreate(args.database)
    subprocess.run([sys.executable, "manage.py", "migrate", "--verbosity", "0"], cwd=REPO, env=env, check=True)
    import django

    django.setup()
    sessions = seed(annotators=args.annotators, comparisons=comparisons, overlap=args.overlap, chatters=args.chats)
    chat_sessions = sessions[args.annotators:]
    sessions = sessions[:args.annotators]
    from django.db import connection

    with connection.cursor() as cursor:
        # Planner statistics for the freshly loaded tables, as autovacuum would gather in production.
        cursor.execute("ANALYZE")

    log_path = var_dir / "gunicorn.log"
    server = gunicorn_start(env, args, log_path)
    print(f"gunicorn: {args.workers} workers x {args.threads} threads (gthread) on 127.0.0.1:{args.port}; "
          f"{args.annotators} annotators for {args.seconds:g} s, think time ~{args.think_ms:g} ms, "
          f"{args.double_submit:.0%} double submits; {os.cpu_count()} CPUs")
    chatters: list[Chatter] = []
    writer_stop = threading.Event()
    try:
        started = time.monotonic()
        halves = 2 if args.chats else 1
        deadline = started + args.seconds * halves
        half_starts = started + args.seconds if args.chats else None
        annotators = [
            Annotator(port=args.port, session_key=key, deadline=deadline, args=args, rng=random.Random(rng.random()),
                      half_starts=half_starts)
            for _, key in sessions
        ]
        chatters = [
            Chatter(port=args.port, session_key=key, deadline=deadline, args=args, rng=random.Random(rng.random()),
                    starts=half_starts, username=f"bench{args.annotators + number:03d}")
            for number, (_, key) in enumerate(chat_sessions)
        ]
        writer = threading.Thread(target=replies_written, daemon=True,
                                  kwargs={"stop": writer_stop, "words_per_second": args.chat_words_per_second})
        if args.chats:
            writer.start()
        for client in annotators + chatters:
            client.start()
        for client in annotators + chatters:
            client.join(timeout=args.seconds * halves + 60)
        elapsed = time.monotonic() - started
    finally:
        writer_stop.set()
        gunicorn_stop(server)

    tallies = [annotator.tally for annotator in annotators]
    fetch = [value for tally in tallies for value in tally.latencies["fetch"]]
    submit = [value for tally in tallies for value in tally.latencies["submit"]]
    errors = sum((tally.errors for tally in tallies), Counter())
    saved = sum(len(tally.acknowledged) for tally in tallies)
    doubles = sum(tally.doubles for tally in tallies)
    doubles_calm = sum(tally.doubles_calm for tally in tallies)
    print()
    print(f"judgments/s      {saved / elapsed:.1f}  ({saved} judgments in {elapsed:.1f} s)")
    print(f"all requests     {milliseconds(fetch + submit)}")
    print(f"  fetch next     {milliseconds(fetch)}")
    print(f"  submit         {milliseconds(submit)}")
    print(f"errors           {sum(errors.values())}" + (f"  {dict(errors)}" if errors else ""))
    print(f"double submits   {doubles}, of which {doubles_calm} answered 'already judged' exactly once")
    print(f"empty queue hits {sum(tally.empty_queue for tally in tallies)}")
    if chatters:
        by_half = {half: [value for tally in tallies for value in tally.by_half[half]] for half in HALVES}
        chat_errors = sum((chatter.tally.errors for chatter in chatters), Counter())
        errors += chat_errors
        drafts = [value for chatter in chatters for value in chatter.tally.latencies.get("drafts", [])]
        polls = [value for chatter in chatters for value in chatter.tally.latencies.get("phase poll", [])]
        grew = sum(len(set(chatter.draft_sizes)) > 1 for chatter in chatters)
        p95 = {half: percentile(values, .95) * 1000 for half, values in by_half.items() if values}
        print()
        print(f"annotators alone            {milliseconds(by_half['alone'])}")
        print(f"annotators with {args.chats} chats     {milliseconds(by_half['with chats'])}")
        if len(p95) == 2:
            print(f"annotators' p95 with chats / alone = {p95['with chats'] / p95['alone']:.2f}")
        print(f"chat drafts poll            {milliseconds(drafts)}")
        print(f"chat phase poll             {milliseconds(polls)}")
        print(f"chat errors                 {sum(chat_errors.values())}" + (f"  {dict(chat_errors)}" if chat_errors else ""))
        print(f"chats whose replies grew on the page: {grew} of {len(chatters)}")

    acknowledged = {user: annotator.tally.acknowledged for (user, _), annotator in zip(sessions, annotators)}
    checks = database_checks(acknowledged, [user for user, _ in sessions])
    checks.append(("every double submit stored one row and said so", doubles_calm == doubles,
                   f"{doubles - doubles_calm} of {doubles} not answered calmly"))
    if chatters:
        checks.append(("every chat's replies grew on its page", grew == len(chatters), f"{grew} of {len(chatters)}"))
    print()
    for name, passed, detail in checks:
        print(f"{'ok  ' if passed else 'FAIL'} {name}" + ("" if passed else f": {detail}"))
    from django.db import connections

    connections.close_all()
    if not args.keep:
        database_drop(args.database)
    return 0 if all(passed for _, passed, _ in checks) and not errors else 1


if __name__ == "__main__":
    sys.exit(main())
