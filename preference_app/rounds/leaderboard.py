"""Bradley-Terry ratings of policy versions from human head-to-head judgments, as Chatbot Arena does.

Each judgment between two versions is one game: the preferred version wins, a tie counts half a win
to each. The model is a logistic regression on the difference of the two versions' indicators,

    P(first preferred) = sigmoid(r_first - r_second + gamma * d),                            (1)

where d is the length covariate of style control (zero without it). Games that share both versions,
the outcome and (with style control) both reply lengths may be one entry of `Games` with a count, so
the fit costs O(entries + K^2) per Newton step for K versions, however many judgments they hold.

Prior. Each log-strength r has a normal prior with a standard deviation of PRIOR_SD_ELO rating
points, so a version that never lost (or never won) still gets a finite rating. Because every game
pushes two ratings apart by equal amounts, the likelihood's gradient sums to zero over versions, so at
the optimum the prior's pull does too: the ratings average exactly ELO_BASE. gamma has a weak prior
of its own (LENGTH_PRIOR_SD) only so that a board whose replies are all equally long has one fit.

Style control. d = (len_first - len_second) / (len_first + len_second) in tokens, Chatbot Arena's
normalisation, fitted jointly with the ratings, so a rating is what a version earns at equal length;
the Board reports gamma in rating points per unit of d (a reply twice as long as the other has d = 1/3).

Intervals. 95% intervals come from the Fisher information at the fit (the Laplace approximation:
covariance = inverse Hessian of the penalised negative log-likelihood), projected onto ratings
relative to their mean: the mean itself is fixed by the prior alone, not by any game. We chose this over
- the bootstrap: with style control every game is its own cell, so 200 refits take seconds at 30,000
  games; and on a small board it collapses, since every resample of a 5-0 record is 5-0 and gives
  an interval of zero width;
- the sandwich estimator, which shrinks on a clean sweep for the same reason (a sweep's residuals
  are all small).
Fisher intervals cost one (K+1)^2 solve and are deterministic, so a cached board is the board any
process would compute. They assume independent games: a tie counted as half a win varies less than a
coin flip, which makes them conservative where ties are common, while several annotators judging one
comparison are not independent, which makes them too narrow where overlap is high (the bootstrap
over games had that blind spot too).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

ELO_SCALE = 400 / math.log(10)  # Rating points per natural-log unit of strength.
ELO_BASE = 1000.0
PRIOR_SD_ELO = 400.0  # A version 400 points from the mean (10:1 odds) is one prior standard deviation away.
LENGTH_PRIOR_SD = 5.0  # In log-odds per unit of d: wide enough that the data decide wherever d varies.
Z_95 = 1.959964


@dataclass
class Games:
    """Head-to-head games as columns, entry i being count[i] identical games.

    Columns rather than an object a game: with style control a board is fitted from one entry per
    judgment, and 30,000 objects alive at once set off the garbage collector's full pass, which in
    the web process (torch loaded, some 400,000 objects) takes about 0.2 s.
    """

    first: list[str] = field(default_factory=list)
    second: list[str] = field(default_factory=list)
    score: list[float] = field(default_factory=list)
    first_tokens: list[int] = field(default_factory=list)
    second_tokens: list[int] = field(default_factory=list)
    count: list[int] = field(default_factory=list)

    def add(self, first: str, second: str, score: float, first_tokens: int = 0, second_tokens: int = 0,
            count: int = 1) -> None:
        """`count` games of `first` against `second`: score 1 if `first` was preferred, 0 if `second`, 0.5 a tie."""
        self.first.append(first)
        self.second.append(second)
        self.score.append(score)
        self.first_tokens.append(first_tokens)
        self.second_tokens.append(second_tokens)
        self.count.append(count)


@dataclass(frozen=True)
class Rating:
    name: str
    rating: float
    low: float  # Bounds of the 95% interval.
    high: float
    games: int


@dataclass(frozen=True)
class LengthEffect:
    """gamma of (1) in rating points per unit of (len_first - len_second) / (len_first + len_second)."""

    points: float
    low: float
    high: float


@dataclass(frozen=True)
class Board:
    ratings: tuple[Rating, ...]  # Best first.
    length: LengthEffect | None  # None without style control.
    games: int


@dataclass(frozen=True)
class _Cells:
    """Games as the arrays the fit works on."""

    first: np.ndarray  # (C,) version index
    second: np.ndarray  # (C,) version index
    score: np.ndarray  # (C,)
    length: np.ndarray  # (C,) d of (1); all zero without style control
    count: np.ndarray  # (C,)


def _length_covariate(first_tokens: np.ndarray, second_tokens: np.ndarray) -> np.ndarray:
    """d of (1); two empty replies count as equally long."""
    total = first_tokens + second_tokens
    return np.divide(first_tokens - second_tokens, total, out=np.zeros(total.shape), where=total > 0)


def _cells(games: Games, index: dict[str, int], *, style_control: bool) -> _Cells:
    return _Cells(
        first=np.array([index[name] for name in games.first], dtype=np.intp),
        second=np.array([index[name] for name in games.second], dtype=np.intp),
        score=np.array(games.score, dtype=float),
        length=(_length_covariate(np.array(games.first_tokens, dtype=float), np.array(games.second_tokens, dtype=float))
                if style_control else np.zeros(len(games.score))),
        count=np.array(games.count, dtype=float),
    )


def _prior_precision(versions: int) -> np.ndarray:
    """Diagonal of the prior's precision over (r_1 .. r_K, gamma), in log-odds units."""
    return np.append(np.full(versions, (ELO_SCALE / PRIOR_SD_ELO) ** 2), 1 / LENGTH_PRIOR_SD**2)


def _logits(theta: np.ndarray, cells: _Cells) -> np.ndarray:
    return theta[cells.first] - theta[cells.second] + theta[-1] * cells.length  # (C,), eq. (1)


def _objective(theta: np.ndarray, cells: _Cells, precision: np.ndarray) -> float:
    """Penalised negative log-likelihood, a tie scoring half of each outcome's log-probability."""
    logits = _logits(theta, cells)
    nll = cells.count * (cells.score * np.logaddexp(0, -logits) + (1 - cells.score) * np.logaddexp(0, logits))
    return float(nll.sum() + 0.5 * np.sum(precision * theta**2))


def _gradient_and_hessian(theta: np.ndarray, cells: _Cells, precision: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Built from per-cell sums with bincount, never from a dense (cells x versions) design matrix.

    Long vectors are reduced with np.sum rather than `@`: a dot product goes to the BLAS, whose
    threads spin and wait for a core on a busy two-core web server (16 ms instead of under 1 ms).
    """
    size = len(theta)
    versions = size - 1
    p = 1 / (1 + np.exp(-_logits(theta, cells)))
    residual = cells.count * (p - cells.score)  # (C,)
    weight = cells.count * p * (1 - p)  # (C,)
    gradient = precision * theta
    gradient[:versions] += np.bincount(cells.first, residual, versions) - np.bincount(cells.second, residual, versions)
    gradient[-1] += np.sum(residual * cells.length)
    hessian = np.diag(precision)
    pair = np.bincount(cells.first * versions + cells.second, weight, versions * versions).reshape(versions, versions)
    block = -(pair + pair.T)
    block[np.diag_indices(versions)] = np.bincount(cells.first, weight, versions) + np.bincount(cells.second, weight, versions)
    hessian[:versions, :versions] += block
    cross = np.bincount(cells.first, weight * cells.length, versions) - np.bincount(cells.second, weight * cells.length, versions)
    hessian[:versions, -1] += cross
    hessian[-1, :versions] += cross
    hessian[-1, -1] += np.sum(weight * cells.length**2)
    return gradient, hessian


def _fit(cells: _Cells, versions: int, *, tolerance: float = 1e-10, max_steps: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Newton's method on the strictly convex penalised objective; returns (theta, Hessian at theta).

    Steps are halved until the objective decreases: a full Newton step from zero can overshoot when
    a version wins nearly every game.
    """
    precision = _prior_precision(versions)
    theta = np.zeros(versions + 1)
    current = _objective(theta, cells, precision)
    for _ in range(max_steps):
        gradient, hessian = _gradient_and_hessian(theta, cells, precision)
        step = np.linalg.solve(hessian, gradient)
        if gradient @ step < tolerance:  # Newton decrement: the objective is within this of its minimum.
            return theta, hessian
        scale = 1.0
        while (trial := _objective(theta - scale * step, cells, precision)) > current and scale > 1e-8:
            scale /= 2
        theta, current = theta - scale * step, trial
    return theta, _gradient_and_hessian(theta, cells, precision)[1]


def rate(games: Games, *, style_control: bool = False) -> Board:
    """Ratings with 95% intervals, best first; with `style_control`, at equal reply length."""
    names = sorted(set(games.first) | set(games.second))
    if not names:
        return Board(ratings=(), length=None, games=0)
    index = {name: position for position, name in enumerate(names)}
    cells = _cells(games, index, style_control=style_control)
    theta, hessian = _fit(cells, len(names))
    covariance = np.linalg.inv(hessian)
    # Relative to the mean rating: the level itself is the prior's convention, not something measured.
    centring = np.eye(len(names)) - 1 / len(names)
    spread = np.sqrt(np.diag(centring @ covariance[:-1, :-1] @ centring))
    played = np.bincount(cells.first, cells.count, len(names)) + np.bincount(cells.second, cells.count, len(names))
    ratings = [
        Rating(
            name=name,
            rating=float(ELO_BASE + ELO_SCALE * theta[i]),
            low=float(ELO_BASE + ELO_SCALE * (theta[i] - Z_95 * spread[i])),
            high=float(ELO_BASE + ELO_SCALE * (theta[i] + Z_95 * spread[i])),
            games=int(played[i]),
        )
        for i, name in enumerate(names)
    ]
    length = None
    if style_control:
        half_width = Z_95 * math.sqrt(covariance[-1, -1])
        length = LengthEffect(points=float(ELO_SCALE * theta[-1]), low=float(ELO_SCALE * (theta[-1] - half_width)),
                              high=float(ELO_SCALE * (theta[-1] + half_width)))
    ordered = sorted(ratings, key=lambda rating: (-rating.rating, rating.name))
    return Board(ratings=tuple(ordered), length=length, games=int(cells.count.sum()))
