"""Bradley-Terry ratings of policy versions from human head-to-head judgments, as Chatbot Arena does.

Each judgment between two versions is one game: the preferred version wins, a tie counts half a
win to each. Ratings are fitted by maximum likelihood (the minorisation-maximisation algorithm of
Hunter 2004) and shown on the Elo scale; confidence intervals come from refitting on bootstrap
resamples of the games.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

ELO_SCALE = 400 / math.log(10)  # Rating points per natural-log unit of strength.
ELO_BASE = 1000.0


@dataclass(frozen=True)
class Game:
    first: str
    second: str
    score: float  # 1 if `first` was preferred, 0 if `second`, 0.5 for a tie.


@dataclass(frozen=True)
class Rating:
    name: str
    rating: float
    low: float  # 2.5th percentile over bootstrap resamples.
    high: float  # 97.5th percentile.
    games: int


def fit_strengths(games: list[Game], names: list[str], *, iterations: int = 200, prior_games: float = 0.5) -> dict[str, float]:
    """Maximum-likelihood Bradley-Terry strengths, P(i beats j) = s_i / (s_i + s_j).

    Each version also plays `prior_games` virtual ties against a fixed reference of strength 1,
    which keeps a version that never lost (or never won) at a finite rating.
    """
    strengths = {name: 1.0 for name in names}
    wins = {name: prior_games / 2 for name in names}
    for game in games:
        wins[game.first] += game.score
        wins[game.second] += 1 - game.score
    for _ in range(iterations):
        denominators = {name: prior_games / (strengths[name] + 1.0) for name in names}
        for game in games:
            shared = 1.0 / (strengths[game.first] + strengths[game.second])
            denominators[game.first] += shared
            denominators[game.second] += shared
        strengths = {name: wins[name] / denominators[name] for name in names}
    return strengths


def to_elo(strength: float) -> float:
    return ELO_BASE + ELO_SCALE * math.log(strength)


def rate(games: list[Game], *, bootstrap_rounds: int = 200, seed: int = 0) -> list[Rating]:
    """Ratings with 95% bootstrap intervals, best first."""
    names = sorted({game.first for game in games} | {game.second for game in games})
    if not names:
        return []
    point = fit_strengths(games, names)
    rng = random.Random(seed)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(bootstrap_rounds):
        resample = [rng.choice(games) for _ in games]
        for name, strength in fit_strengths(resample, names, iterations=60).items():
            samples[name].append(to_elo(strength))
    counts = {name: 0 for name in names}
    for game in games:
        counts[game.first] += 1
        counts[game.second] += 1
    ratings = []
    for name in names:
        ordered = sorted(samples[name])
        ratings.append(
            Rating(
                name=name,
                rating=to_elo(point[name]),
                low=ordered[int(0.025 * (len(ordered) - 1))],
                high=ordered[int(0.975 * (len(ordered) - 1))],
                games=counts[name],
            )
        )
    return sorted(ratings, key=lambda rating: rating.rating, reverse=True)
