"""Reads for training rounds: the data each step trains on, and the dashboard's statistics."""

from __future__ import annotations

import logging
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from django.core.cache import cache
from django.db import connection
from django.db.models import Count, F, Max, Prefetch, Q
from django.utils import timezone

from preference_app.api.export_selectors import preference_pairs_iter
from preference_app.api.filters import PreferenceFilters
from preference_app.api.pseudonyms import annotator_pseudonym
from preference_app.core.models import (
    Comparison,
    Demonstration,
    Judgment,
    ModelVersion,
    Prompt,
    TrainingRound,
    Turn,
)
from preference_app.core.selectors import messages_before
from preference_app.rounds import leaderboard, verdicts
from preference_app.rounds.evaluation_sets import evaluation_prompt_hashes, opening_prompt_sha256
from preference_app.rounds.round_settings import RoundSettings
from preference_app.rounds.step_runner import WORKING

if TYPE_CHECKING:
    from training.data import Demonstration as TrainingDemonstration
    from training.data import PreferencePair

logger = logging.getLogger(__name__)

# A prompt's comparisons go to the reward model's held-out slice when its text hash falls in one
# of this many buckets, so every comparison of a prompt lands on the same side and held-out
# accuracy measures prompts the model never saw.
HELD_OUT_BUCKETS = 10


def base_policy(version: ModelVersion) -> ModelVersion:
    """Follow `parent` links back to the version every later policy descends from."""
    while version.parent_id is not None:
        version = version.parent
    return version


def prompts_for_generation(*, limit: int) -> list[Prompt]:
    """Prompts used least so far, oldest first; evaluation prompts never."""
    excluded = evaluation_prompt_hashes()
    return list(
        Prompt.objects.exclude(text_sha256__in=excluded).annotate(uses=Count("conversations")).order_by("uses", "id")[:limit]
    )


def prompts_for_online_training(*, training_round: TrainingRound, limit: int) -> list[Prompt]:
    """The prompts an online policy step samples on: the round's own generation prompts, whose
    replies its reward model was trained on, then the least-used prompts of the training pool, up
    to `limit` in all; evaluation prompts never."""
    excluded = evaluation_prompt_hashes()
    own = list(
        Prompt.objects.filter(conversations__comparisons__training_round=training_round)
        .exclude(text_sha256__in=excluded).distinct().order_by("id")[:limit]
    )
    taken = {prompt.pk for prompt in own}
    pool = [prompt for prompt in prompts_for_generation(limit=limit) if prompt.pk not in taken]
    return own + pool[: limit - len(own)]


def is_held_out_prompt(prompt_sha256: str) -> bool:
    return int(prompt_sha256[:8], 16) % HELD_OUT_BUCKETS == 0


def preference_pairs(*, held_out_split: bool) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """Every decided comparison as a (context, chosen, rejected, margin) pair for training.

    The same pairs and aggregation rule as the researchers' export (api.export_selectors): the most common
    choice of a comparison's judgments decides it, ties and both-bad outcomes are left out, and the
    margin is the mean strength of the agreeing judgments. Pairs whose opening prompt belongs to an
    evaluation set are left out, whatever their source (verdict head-to-heads, imports, chats), and
    so are comparisons anyone flagged unsafe or unusable: a flag says the pair should not teach.
    With `held_out_split`, the pairs of one prompt in ten (by text hash) go to the second list.
    """
    # Imported here, as in demonstrations_for_sft: training.data loads transformers, which only the
    # workers that train need; the dashboard imports this module too.
    from training.data import PreferencePair

    excluded = evaluation_prompt_hashes()
    flagged = set(Judgment.objects.exclude(flags=[]).values_list("comparison_id", flat=True))
    train, held_out = [], []
    for exported in preference_pairs_iter(filters=PreferenceFilters()):
        opening = opening_prompt_sha256(exported.messages)
        if opening in excluded or exported.comparison_id in flagged:
            continue
        pair = PreferencePair(prompt=exported.messages, chosen=exported.chosen, rejected=exported.rejected,
                              margin=exported.margin)
        if held_out_split and opening is not None and is_held_out_prompt(opening):
            held_out.append(pair)
        else:
            train.append(pair)
    return train, held_out


def demonstrations_for_sft() -> list[TrainingDemonstration]:
    from training.data import Demonstration as TrainingDemonstration

    ordered_turns = Prefetch("conversation__turns", queryset=Turn.objects.order_by("index"))
    demonstrations = Demonstration.objects.prefetch_related(ordered_turns).order_by("id")
    excluded = evaluation_prompt_hashes()
    result = []
    for demonstration in demonstrations:
        prompt = messages_before(demonstration.conversation.turns.all(), demonstration.context_length)
        if opening_prompt_sha256(prompt) not in excluded:
            result.append(TrainingDemonstration(prompt=prompt, completion=demonstration.text))
    return result


def verdict_tally(*, training_round: TrainingRound) -> verdicts.Tally:
    """Count the people's judgments of a round's blind head-to-heads, from the new policy's side.

    Every judgment is one game (with overlap, a comparison gives several). The reward model agreed
    with a decided judgment when it gave the reply the person preferred the higher reward.
    """
    new_policy_id = (
        ModelVersion.objects.filter(training_round=training_round, kind=ModelVersion.Kind.POLICY)
        .values_list("pk", flat=True).first()
    )
    rewards = training_round.metrics.get("verdict_rewards", {})
    head_to_heads = Comparison.objects.filter(training_round=training_round, source=Comparison.Source.VERDICT)
    counts = Counter()
    rows = Judgment.objects.filter(comparison__in=head_to_heads).values_list(
        "comparison_id", "choice", "comparison__candidate_a__model_version_id"
    )
    for comparison_id, choice, first_version in rows:
        if choice in (Judgment.Choice.TIE, Judgment.Choice.BOTH_BAD):
            counts[choice] += 1
            continue
        new_won = (choice == Judgment.Choice.A) == (first_version == new_policy_id)
        counts["new" if new_won else "serving"] += 1
        new_reward, serving_reward = rewards.get(str(comparison_id), (0.0, 0.0))
        if new_reward != serving_reward and (new_reward > serving_reward) == new_won:
            counts["agreed"] += 1
    return verdicts.Tally(
        new_wins=counts["new"], serving_wins=counts["serving"], ties=counts[Judgment.Choice.TIE],
        both_bad=counts[Judgment.Choice.BOTH_BAD], reward_model_agreed=counts["agreed"],
        open_comparisons=head_to_heads.filter(judgment_count__lt=F("overlap_target")).count(),
    )


def round_settings_of(training_round: TrainingRound) -> RoundSettings:
    return RoundSettings.from_dict(training_round.config)


def round_judgment_count(*, training_round: TrainingRound) -> int:
    return Judgment.objects.filter(comparison__training_round=training_round).count()


@dataclass(frozen=True)
class RoundProgress:
    training_round: TrainingRound
    judgments: int
    judgment_target: int
    eta_seconds: float | None


def round_progress(*, training_round: TrainingRound) -> RoundProgress:
    """Where a round stands, with a rough ETA for the current step from its progress so far."""
    target = training_round.config.get("judgment_target", 0)
    eta = None
    if training_round.step_claimed and 0 < training_round.progress < 1:
        elapsed = (timezone.now() - training_round.step_claimed).total_seconds()
        eta = elapsed * (1 - training_round.progress) / training_round.progress
    return RoundProgress(
        training_round=training_round,
        judgments=round_judgment_count(training_round=training_round),
        judgment_target=target,
        eta_seconds=eta,
    )


def active_round() -> TrainingRound | None:
    finished = [TrainingRound.Status.COMPLETED, TrainingRound.Status.FAILED, TrainingRound.Status.CANCELLED]
    return TrainingRound.objects.exclude(status__in=finished).order_by("-number").first()


def round_history(limit: int = 50) -> list[TrainingRound]:
    return list(TrainingRound.objects.order_by("-number")[:limit])


# How many of the latest timed rounds the start form's estimate learns this server's speed from:
# enough to smooth over one unusual round, few enough to follow a change of machine or model.
TIMED_ROUNDS = 5


def rounds_timed(*, limit: int = TIMED_ROUNDS) -> list[TrainingRound]:
    """The latest completed rounds that recorded the time of each working step (step_runner keeps
    them in `metrics["step_seconds"]`); rounds finished before steps were timed are left out."""
    timed = TrainingRound.objects.filter(status=TrainingRound.Status.COMPLETED,
                                         metrics__step_seconds__has_keys=[str(status) for status in WORKING])
    return list(timed.only("number", "config", "metrics").order_by("-number")[:limit])


# A board is refitted whenever its key changes (see _leaderboard_key); this expiry only bounds how
# long an edit in place, which changes no key, can stay on screen.
LEADERBOARD_CACHE_SECONDS = 3600
_SCORES = {Judgment.Choice.A: 1.0, Judgment.Choice.B: 0.0, Judgment.Choice.TIE: 0.5}


def _head_to_head_judgments():
    """Judgments of comparisons between the replies of two different model versions."""
    return Judgment.objects.filter(
        comparison__candidate_a__model_version__isnull=False, comparison__candidate_b__model_version__isnull=False
    ).exclude(comparison__candidate_a__model_version=F("comparison__candidate_b__model_version"))


def head_to_head_games(*, style_control: bool = False) -> leaderboard.Games:
    """Head-to-head judgments as games; without style control, counted in SQL.

    Both-bad judgments say nothing about which version is better and are left out. Without style
    control 30,000 judgments arrive as a few rows per pair of versions and outcome. With it each
    judgment is its own game carrying both replies' token counts: pairs of lengths rarely repeat,
    so grouping by them in SQL would take longer than the rows it saves. Rows are streamed so that
    they are freed as they are read (see leaderboard.Games on why that matters).
    """
    judged = _head_to_head_judgments().exclude(choice=Judgment.Choice.BOTH_BAD).order_by()
    versions = ["comparison__candidate_a__model_version", "comparison__candidate_b__model_version", "choice"]
    names = dict(ModelVersion.objects.values_list("id", "name"))
    games = leaderboard.Games()
    if style_control:
        rows = judged.values_list(*versions, "comparison__candidate_a__token_count", "comparison__candidate_b__token_count")
        for first, second, choice, first_tokens, second_tokens in rows.iterator(chunk_size=2000):
            games.add(names[first], names[second], _SCORES[choice], first_tokens, second_tokens)
    else:
        for first, second, choice, count in judged.values_list(*versions).annotate(count=Count("id")):
            games.add(names[first], names[second], _SCORES[choice], count=count)
    return games


def _leaderboard_key(*, style_control: bool) -> str:
    """A key that changes whenever a head-to-head judgment is added or deleted, or a round moves on.

    The count and the largest id together catch additions and deletions, since ids are never
    reused. The latest round's number and status make every step of the loop refit the board too,
    which bounds how long an edit in place (an admin correcting a judgment or renaming a version),
    invisible to the count, stays on screen while rounds run.
    """
    latest = TrainingRound.objects.order_by("-number").values_list("number", "status").first()
    judged = _head_to_head_judgments().aggregate(count=Count("id"), last=Max("id"))
    round_part = "-".join(map(str, latest)) if latest else "none"
    return f"rounds:leaderboard:v1:{int(style_control)}:{round_part}:{judged['count']}:{judged['last']}"


def policy_leaderboard(*, style_control: bool = False) -> leaderboard.Board:
    """Ratings of policy versions from human head-to-head judgments, with 95% intervals.

    Cached in the default cache under _leaderboard_key, so a board is at most as stale as that key
    (an edit in place is seen at the next round step or within LEADERBOARD_CACHE_SECONDS). A
    judgment committed between reading the key and counting the games makes the stored board newer
    than its key, never older; the next request sees a new key and refits. Should the cache be
    unreachable, the board is fitted afresh, which costs tens of milliseconds, rather than failing
    the page.
    """
    key = _leaderboard_key(style_control=style_control)
    try:
        board = cache.get(key)
    except Exception:  # Any cache backend error: fitting afresh is slower but correct.
        logger.exception("The leaderboard cache could not be read; fitting afresh.")
        board = None
    if board is None:
        board = leaderboard.rate(head_to_head_games(style_control=style_control), style_control=style_control)
        try:
            cache.set(key, board, LEADERBOARD_CACHE_SECONDS)
        except Exception:
            logger.exception("The leaderboard cache could not be written.")
    return board


@dataclass(frozen=True)
class AnnotatorStatistics:
    pseudonym: str
    judgments: int
    agreement: float | None  # Share of overlapping A/B judgments agreeing with the others' majority.
    left_choice_rate: float | None  # Share of A/B judgments that picked the left-hand reply.
    median_seconds: float | None
    judged_today: int


_SIDED = (Judgment.Choice.A, Judgment.Choice.B)

# For each A/B judgment that others also judged A or B, the others' majority; a tie among them goes
# to the choice the earliest of them made (lowest id), so every such judgment has one. Then, per
# annotator, how many such judgments there were and how many matched that majority. In SQL because
# this needs every judgment of a comparison beside every other, and done in Python it was the slowest
# part of the dashboard (0.65 s at 30,000 judgments).
_AGREEMENT_SQL = """
SELECT judged.annotator_id, COUNT(*),
       SUM(CASE WHEN judged.others_a > judged.others_b
                     OR (judged.others_a = judged.others_b AND judged.first_a < judged.first_b)
                THEN CASE WHEN judged.choice = %s THEN 1 ELSE 0 END
                ELSE CASE WHEN judged.choice = %s THEN 1 ELSE 0 END END)
FROM (
    SELECT mine.annotator_id, mine.choice,
           SUM(CASE WHEN theirs.choice = %s THEN 1 ELSE 0 END) AS others_a,
           SUM(CASE WHEN theirs.choice = %s THEN 1 ELSE 0 END) AS others_b,
           MIN(CASE WHEN theirs.choice = %s THEN theirs.id END) AS first_a,
           MIN(CASE WHEN theirs.choice = %s THEN theirs.id END) AS first_b
    FROM {judgment} mine
    JOIN {judgment} theirs ON theirs.comparison_id = mine.comparison_id AND theirs.id <> mine.id
    WHERE mine.choice IN (%s, %s) AND theirs.choice IN (%s, %s)
    GROUP BY mine.id, mine.annotator_id, mine.choice
) judged
GROUP BY judged.annotator_id
"""


def _agreement_by_annotator() -> dict[int, float]:
    table = connection.ops.quote_name(Judgment._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(_AGREEMENT_SQL.format(judgment=table), list(_SIDED) * 5)
        return {annotator_id: agreeing / overlapping for annotator_id, overlapping, agreeing in cursor.fetchall()}


def _median_seconds_by_annotator() -> dict[int, float]:
    # SQLite has no median aggregate, so the times themselves come back, two numbers a judgment.
    times = defaultdict(list)
    for annotator_id, seconds in Judgment.objects.order_by().values_list("annotator_id", "seconds_spent").iterator(chunk_size=2000):
        times[annotator_id].append(seconds)
    return {annotator_id: statistics.median(values) for annotator_id, values in times.items()}


def annotator_statistics() -> list[AnnotatorStatistics]:
    """Each annotator's volume, agreement, side bias and pace, counted by the database."""
    today = timezone.now() - timedelta(hours=24)
    sided = Q(choice__in=_SIDED)
    counts = (
        Judgment.objects.order_by("annotator_id").values("annotator_id")
        .annotate(judgments=Count("id"), judged_today=Count("id", filter=Q(created__gte=today)),
                  sided=Count("id", filter=sided), left=Count("id", filter=sided & Q(choice=F("left_candidate"))))
    )
    agreement = _agreement_by_annotator()
    median_seconds = _median_seconds_by_annotator()
    return [
        AnnotatorStatistics(
            pseudonym=annotator_pseudonym(row["annotator_id"]),
            judgments=row["judgments"],
            agreement=agreement.get(row["annotator_id"]),
            left_choice_rate=row["left"] / row["sided"] if row["sided"] else None,
            median_seconds=median_seconds[row["annotator_id"]],
            judged_today=row["judged_today"],
        )
        for row in counts
    ]
