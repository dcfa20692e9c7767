"""Bradley-Terry ratings of policy versions from head-to-head games, and the cached board of the dashboard."""

from collections import Counter

import numpy as np
import pytest

from preference_app.core import roles
from preference_app.core.models import Candidate, Comparison, Conversation, ModelVersion, TrainingRound
from preference_app.core.services import judgment_submit
from preference_app.rounds import selectors
from preference_app.rounds.leaderboard import ELO_BASE, ELO_SCALE, Games, rate
from tests.conftest import make_user


def games(first, second, wins, losses, ties=0) -> Games:
    played = Games()
    for score, count in ((1.0, wins), (0.0, losses), (0.5, ties)):
        played.add(first, second, score, count=count)
    return played


def simulated_games(true_ratings: np.ndarray, count: int, rng: np.random.Generator) -> Games:
    """`count` games between random pairs of versions v0, v1, ..., won with Bradley-Terry odds."""
    versions = len(true_ratings)
    first = rng.integers(0, versions, count)
    second = (first + rng.integers(1, versions, count)) % versions
    won = rng.random(count) < 1 / (1 + np.exp(-(true_ratings[first] - true_ratings[second]) / ELO_SCALE))
    played = Games()
    for (i, j, first_won), n in Counter(zip(first.tolist(), second.tolist(), won.tolist())).items():
        played.add(f"v{i}", f"v{j}", float(first_won), count=n)
    return played


def by_name(board):
    return {rating.name: rating for rating in board.ratings}


def test_the_fit_recovers_known_ratings_from_simulated_games():
    true_ratings = np.array([-150.0, -50.0, 0.0, 60.0, 140.0])
    board = rate(simulated_games(true_ratings, 20_000, np.random.default_rng(0)))
    ratings = by_name(board)
    # Each version plays about 8,000 games at odds near even, so a rating's standard error is about
    # ELO_SCALE / sqrt(8,000 / 4) = 4 points; 15 points is nearly four of them.
    for version, truth in enumerate(true_ratings):
        assert abs(ratings[f"v{version}"].rating - (ELO_BASE + truth)) < 15
        assert ratings[f"v{version}"].low < ratings[f"v{version}"].rating < ratings[f"v{version}"].high
    assert [rating.name for rating in board.ratings] == ["v4", "v3", "v2", "v1", "v0"]
    assert np.mean([rating.rating for rating in board.ratings]) == pytest.approx(ELO_BASE)
    assert board.games == 20_000 and board.length is None


def test_the_95_percent_intervals_cover_the_true_ratings_about_95_percent_of_the_time():
    rng = np.random.default_rng(1)
    true_ratings = np.array([-100.0, 0.0, 100.0])
    covered = []
    for _ in range(300):
        for rating in rate(simulated_games(true_ratings, 300, rng)).ratings:
            covered.append(rating.low <= ELO_BASE + true_ratings[int(rating.name[1:])] <= rating.high)
    # 900 checks: at a true 95%, the share lies within 0.93-0.97 at about three standard errors
    # (more spread, since a replicate's three ratings are tied together through their mean).
    assert 0.92 <= np.mean(covered) <= 0.98


def test_a_tie_counts_as_half_a_win_to_each_side():
    with_ties = by_name(rate(games("a", "b", wins=10, losses=0, ties=20)))
    without = by_name(rate(games("a", "b", wins=20, losses=10)))
    for name in "ab":
        assert with_ties[name].rating == pytest.approx(without[name].rating)
        assert (with_ties[name].low, with_ties[name].high) == pytest.approx((without[name].low, without[name].high))
    only_ties = rate(games("a", "b", wins=0, losses=0, ties=10)).ratings
    assert only_ties[0].rating == pytest.approx(only_ties[1].rating)


def test_an_unbeaten_version_still_gets_a_finite_rating_and_interval():
    ratings = by_name(rate(games("a", "b", wins=5, losses=0)))
    assert ratings["a"].rating > ratings["b"].rating
    for rating in ratings.values():
        assert all(np.isfinite([rating.low, rating.rating, rating.high]))
        assert abs(rating.rating - ELO_BASE) < 1000


def test_with_style_control_a_version_that_wins_only_by_being_longer_loses_its_advantage():
    rng = np.random.default_rng(0)
    count = 4000
    verbose_first = rng.random(count) < 0.5
    verbose_tokens, concise_tokens = rng.integers(100, 401, count), rng.integers(50, 251, count)
    first_tokens = np.where(verbose_first, verbose_tokens, concise_tokens)
    second_tokens = np.where(verbose_first, concise_tokens, verbose_tokens)
    length_log_odds = 2.0  # People here prefer the longer reply, and nothing else.
    length = (first_tokens - second_tokens) / (first_tokens + second_tokens)
    first_won = rng.random(count) < 1 / (1 + np.exp(-length_log_odds * length))
    played = Games()
    for verbose, won, tokens_1, tokens_2 in zip(verbose_first, first_won, first_tokens, second_tokens):
        played.add(*(("verbose", "concise") if verbose else ("concise", "verbose")), float(won), int(tokens_1), int(tokens_2))
    raw = by_name(rate(played))
    assert raw["verbose"].low > raw["concise"].high
    controlled = rate(played, style_control=True)
    verbose, concise = by_name(controlled)["verbose"], by_name(controlled)["concise"]
    # For two versions, overlapping intervals mean the difference is within its own 95% interval.
    assert verbose.low <= concise.high and concise.low <= verbose.high
    assert abs(verbose.rating - concise.rating) < (raw["verbose"].rating - raw["concise"].rating) / 5
    assert controlled.length.low < length_log_odds * ELO_SCALE < controlled.length.high


def test_no_games_give_an_empty_board():
    assert rate(Games()).ratings == ()


def policy(name: str) -> ModelVersion:
    return ModelVersion.objects.create(name=name, kind=ModelVersion.Kind.POLICY, path=f"/{name}", base_model_id="x")


def head_to_head(first: ModelVersion, second: ModelVersion, tokens=(10, 10)) -> Comparison:
    conversation = Conversation.objects.create(source=Conversation.Source.PROMPT)
    a, b = (Candidate.objects.create(conversation=conversation, context_length=1, text=f"{version.name} says hi",
                                     model_version=version, token_count=count)
            for version, count in ((first, tokens[0]), (second, tokens[1])))
    return Comparison.objects.create(conversation=conversation, context_length=1, candidate_a=a, candidate_b=b)


def judge(comparison: Comparison, annotator, choice: str) -> None:
    judgment_submit(annotator=annotator, comparison=comparison, choice=choice,
                    strength=2 if choice in ("a", "b") else None, left_candidate="a")


@pytest.fixture
def annotators(db):
    return [make_user(f"judge{index}", roles.ANNOTATOR) for index in range(4)]


def test_the_board_is_cached_until_a_new_head_to_head_judgment_arrives(annotators, django_assert_num_queries):
    old, new = policy("round-1-policy"), policy("round-2-policy")
    comparisons = [head_to_head(new, old) for _ in range(3)]
    for comparison in comparisons[:2]:
        for annotator in annotators:
            judge(comparison, annotator, "a")
    first = selectors.policy_leaderboard()
    with django_assert_num_queries(2):  # The latest round and the judgments' count: the key, nothing more.
        assert selectors.policy_leaderboard() == first
    judge(comparisons[2], annotators[0], "b")
    refitted = selectors.policy_leaderboard()
    assert refitted.games == first.games + 1
    assert refitted.ratings[0].rating < first.ratings[0].rating


def test_a_round_moving_on_refits_the_board(annotators, django_assert_num_queries):
    comparison = head_to_head(policy("round-1-policy"), policy("round-2-policy"))
    judge(comparison, annotators[0], "a")
    training_round = TrainingRound.objects.create(number=1, status=TrainingRound.Status.EVALUATING)
    selectors.policy_leaderboard()
    TrainingRound.objects.filter(pk=training_round.pk).update(status=TrainingRound.Status.COMPLETED)
    with django_assert_num_queries(4):  # The key, then the versions' names and the games: a refit.
        selectors.policy_leaderboard()


class UnreachableCache:
    def get(self, key):
        raise ConnectionError("Redis is down")

    def set(self, key, value, timeout):
        raise ConnectionError("Redis is down")


def test_the_board_is_fitted_afresh_when_the_cache_cannot_be_reached(annotators, monkeypatch):
    judge(head_to_head(policy("round-1-policy"), policy("round-2-policy")), annotators[0], "a")
    monkeypatch.setattr(selectors, "cache", UnreachableCache())
    assert [rating.name for rating in selectors.policy_leaderboard().ratings] == ["round-1-policy", "round-2-policy"]


def test_style_control_uses_the_replies_token_counts(annotators):
    terse, wordy = policy("terse"), policy("wordy")
    for _ in range(6):
        comparison = head_to_head(wordy, terse, tokens=(300, 100))
        for annotator in annotators[:3]:
            judge(comparison, annotator, "a")
        judge(comparison, annotators[3], "b")
    for _ in range(6):
        comparison = head_to_head(terse, wordy, tokens=(150, 50))
        for annotator in annotators[:3]:
            judge(comparison, annotator, "a")
        judge(comparison, annotators[3], "b")
    # Each side wins three in four of its games when its reply is the longer one: length, not the version.
    raw, controlled = selectors.policy_leaderboard(), selectors.policy_leaderboard(style_control=True)
    assert raw.length is None and raw.games == controlled.games == 48
    assert controlled.length.low > 0


def test_the_dashboard_shows_the_board_with_and_without_style_control(client, annotators):
    judge(head_to_head(policy("round-1-policy"), policy("round-2-policy"), tokens=(40, 20)), annotators[0], "a")
    client.force_login(make_user("boss", roles.ADMIN, is_staff=True))
    plain = client.get("/rounds/").content.decode()
    assert "round-1-policy" in plain and "Control for reply length" in plain and "Length effect" not in plain
    controlled = client.get("/rounds/?control=length").content.decode()
    assert "Ratings at equal reply length" in controlled and "Length effect" in controlled
