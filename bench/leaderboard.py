"""The policy leaderboard and the training dashboard at 3,000 and 30,000 head-to-head judgments.

    .venv/bin/python bench/leaderboard.py [--sizes 3000,30000] [--versions 8] [--repeats 7] [--keep]

Seeds a throwaway database with bulk_create: a SQLite file in a temporary directory, or the
PostgreSQL database at DATABASE_URL, whose name must contain "bench" because the bench empties it.
It holds --versions policy versions, one per completed round, and head-to-head comparisons of two
versions, two thirds between a version and its parent (as a round's head-to-head makes them) and a
third between any two; each comparison is judged by two of 40 annotators. Outcomes follow known
ratings 40 points apart plus a preference for the longer reply (later versions write longer ones),
with 10% ties and 4% both-bad. Sizes are reached by adding judgments, so the first size's data is
part of the second's.

At each size it times, --repeats times each (median and max, milliseconds):
- the fit with its intervals alone (leaderboard.rate on the games already read), with and without
  style control;
- policy_leaderboard() uncached (cache cleared first: SQL counting plus fit) and cached;
- annotator_statistics();
- GET /rounds/ through Django's test Client, logged in as an admin, uncached (cache cleared before
  each request) and cached, without and with ?control=length.
DEBUG is off, as in production; the default cache is local memory unless REDIS_URL is set.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

ANNOTATORS = 40
JUDGMENTS_PER_COMPARISON = 2
RATING_STEP = 40.0  # True rating of version i is 1000 + RATING_STEP * (i - mean).
LENGTH_LOG_ODDS = 1.0  # Simulated people's preference for the longer reply, per unit of d.
BATCH = 5000


def configure(work: Path) -> None:
    database_url = os.environ.get("DATABASE_URL")
    if database_url and "bench" not in urlparse(database_url).path:
        sys.exit("DATABASE_URL must name a database with 'bench' in its name: the bench empties it.")
    os.environ.update(
        VAR_DIR=str(work), DJANGO_SETTINGS_MODULE="preference_app.settings", DEBUG="false",
        SECRET_KEY=secrets.token_urlsafe(50), ALLOWED_HOSTS="testserver", SECURE_SSL_REDIRECT="false",
        CELERY_BROKER_URL="memory://",
    )
    (work / "staticfiles").mkdir()  # Whitenoise warns at start-up when STATIC_ROOT is missing.
    import django

    django.setup()


def seed_versions(count: int) -> list:
    from preference_app.core.models import ModelVersion, TrainingRound

    versions = []
    for number in range(count):
        training_round = TrainingRound.objects.create(
            number=number + 1, status=TrainingRound.Status.COMPLETED, step="Done", progress=1.0,
            metrics={"reward_held_out_accuracy": 0.6 + 0.01 * number, "kl_to_reference": 0.1 * number,
                     "win_rate_vs_previous": 0.55, "mean_length_new": 60 + 20 * number},
        )
        versions.append(ModelVersion.objects.create(
            name=f"round-{number + 1}-policy", kind=ModelVersion.Kind.POLICY, path=f"/bench/{number}",
            base_model_id="bench", parent=versions[-1] if versions else None, training_round=training_round,
        ))
    return versions


def seed_users() -> tuple[list, object]:
    """The annotators, and an admin to load the dashboard as."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group, Permission

    from preference_app.core import roles

    roles.roles_ensure(Group, Permission)
    group = Group.objects.get(name=roles.ANNOTATOR)
    users = get_user_model().objects.bulk_create(
        [get_user_model()(username=f"bench-annotator-{number}") for number in range(ANNOTATORS)]
    )
    group.user_set.add(*users)
    admin = get_user_model().objects.create_user("bench-admin", is_staff=True)
    admin.groups.add(Group.objects.get(name=roles.ADMIN))
    return users, admin


def add_judgments(count: int, versions: list, annotators: list, rng: np.random.Generator) -> None:
    """`count` more head-to-head judgments, JUDGMENTS_PER_COMPARISON per comparison."""
    from django.db import transaction

    from preference_app.core.models import Candidate, Comparison, Conversation, Judgment

    true_ratings = RATING_STEP * (np.arange(len(versions)) - (len(versions) - 1) / 2)
    comparisons = count // JUDGMENTS_PER_COMPARISON
    for start in range(0, comparisons, BATCH):
        size = min(BATCH, comparisons - start)
        later = rng.integers(1, len(versions), size)
        earlier = np.where(rng.random(size) < 2 / 3, later - 1, rng.integers(0, later))
        swap = rng.random(size) < 0.5  # The app puts either version first.
        first, second = np.where(swap, earlier, later), np.where(swap, later, earlier)
        # Later versions write longer replies, as a policy trained on human preferences tends to.
        first_tokens = rng.integers(20, 120 + 30 * first)
        second_tokens = rng.integers(20, 120 + 30 * second)
        with transaction.atomic():
            conversations = Conversation.objects.bulk_create(
                [Conversation(source=Conversation.Source.PROMPT) for _ in range(size)], batch_size=BATCH
            )
            candidates = Candidate.objects.bulk_create(
                [
                    Candidate(conversation=conversation, context_length=1, text="A reply. " * 8,
                              model_version=versions[version], token_count=int(tokens))
                    for offset, conversation in enumerate(conversations)
                    for version, tokens in ((first[offset], first_tokens[offset]), (second[offset], second_tokens[offset]))
                ],
                batch_size=BATCH,
            )
            made = Comparison.objects.bulk_create(
                [
                    Comparison(conversation=conversation, context_length=1, candidate_a=candidates[2 * offset],
                               candidate_b=candidates[2 * offset + 1], overlap_target=JUDGMENTS_PER_COMPARISON,
                               judgment_count=JUDGMENTS_PER_COMPARISON)
                    for offset, conversation in enumerate(conversations)
                ],
                batch_size=BATCH,
            )
            length = (first_tokens - second_tokens) / (first_tokens + second_tokens)
            p_first = 1 / (1 + np.exp(-((true_ratings[first] - true_ratings[second]) * np.log(10) / 400
                                        + LENGTH_LOG_ODDS * length)))
            judgments = []
            for offset, comparison in enumerate(made):
                judges = rng.choice(len(annotators), JUDGMENTS_PER_COMPARISON, replace=False)
                for annotator in judges:
                    draw = rng.random()
                    choice = "both_bad" if draw < 0.04 else "tie" if draw < 0.14 else (
                        "a" if rng.random() < p_first[offset] else "b")
                    judgments.append(Judgment(
                        comparison=comparison, annotator=annotators[annotator], choice=choice,
                        strength=int(rng.integers(1, 5)) if choice in ("a", "b") else None,
                        left_candidate="a" if rng.random() < 0.5 else "b",
                        seconds_spent=float(rng.lognormal(3, 0.6)),
                    ))
            Judgment.objects.bulk_create(judgments, batch_size=BATCH)


def timed(action, repeats: int, before=None) -> tuple[float, float]:
    """Median and max wall time of `action` in milliseconds; `before` runs untimed before each call."""
    times = []
    for _ in range(repeats):
        if before:
            before()
        started = time.perf_counter()
        action()
        times.append(1000 * (time.perf_counter() - started))
    return statistics.median(times), max(times)


def page(client, url: str):
    def get():
        response = client.get(url)
        assert response.status_code == 200, response.status_code
    return get


def measure(repeats: int, client) -> list[tuple[str, tuple[float, float]]]:
    from django.core.cache import cache

    from preference_app.rounds import leaderboard, selectors

    rows = []
    for style_control in (False, True):
        games = selectors.head_to_head_games(style_control=style_control)
        fit = partial(leaderboard.rate, games, style_control=style_control)
        board = partial(selectors.policy_leaderboard, style_control=style_control)
        label = "with style control" if style_control else "without style control"
        rows.append((f"fit + intervals, {label}", timed(fit, repeats)))
        rows.append((f"policy_leaderboard() uncached, {label}", timed(board, repeats, cache.clear)))
        rows.append((f"policy_leaderboard() cached, {label}", timed(board, repeats)))
    rows.append(("annotator_statistics()", timed(selectors.annotator_statistics, repeats)))
    for url in ("/rounds/", "/rounds/?control=length"):
        rows.append((f"GET {url} uncached", timed(page(client, url), repeats, cache.clear)))
        rows.append((f"GET {url} cached", timed(page(client, url), repeats)))
    return rows


def run(args: argparse.Namespace) -> None:
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client

    from preference_app.core.models import Judgment
    from preference_app.rounds import selectors

    call_command("migrate", verbosity=0)
    call_command("flush", interactive=False, verbosity=0)
    rng = np.random.default_rng(args.seed)
    versions = seed_versions(args.versions)
    annotators, admin = seed_users()
    client = Client()
    client.force_login(admin)
    print(f"database={connection.vendor} versions={args.versions} annotators={ANNOTATORS} cpus={os.cpu_count()} "
          f"load={os.getloadavg()[0]:.2f} repeats={args.repeats}")
    results: dict[int, list] = {}
    for size in (int(size) for size in args.sizes.split(",")):
        started = time.perf_counter()
        add_judgments(size - Judgment.objects.count(), versions, annotators, rng)
        cells = [len(selectors.head_to_head_games(style_control=style_control).count) for style_control in (False, True)]
        print(f"seeded {Judgment.objects.count()} judgments in {time.perf_counter() - started:.1f} s; the fit sees "
              f"{cells[0]} cells without style control, {cells[1]} with it", flush=True)
        results[size] = measure(args.repeats, client)
    sizes = list(results)
    print(f"\n{'milliseconds, median / max':<58}" + "".join(f"{f'{size:,} judgments':>22}" for size in sizes))
    for row, (label, _) in enumerate(results[sizes[0]]):
        cells = "".join(f"{results[size][row][1][0]:>13.1f} /{results[size][row][1][1]:>7.1f}" for size in sizes)
        print(f"{label:<58}{cells}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="3000,30000", help="head-to-head judgments, ascending")
    parser.add_argument("--versions", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the SQLite database afterwards")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-leaderboard-"))
    try:
        configure(work)
        run(args)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work)


if __name__ == "__main__":
    main()
