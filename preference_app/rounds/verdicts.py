"""The people's verdict on a new policy: P(new beats serving) from blind head-to-head judgments.

With two players, the Bradley-Terry maximum-likelihood estimate of P(new beats serving) is the
share of games the new policy won, a tie counting half a win to each (the model's likelihood is
maximised where the expected wins equal the observed ones). Its interval is Wilson's score interval
for a binomial proportion (Wilson 1927), which stays inside [0, 1] and keeps sensible coverage at
the few dozen judgments a round collects, where the normal approximation does not.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from statistics import NormalDist


@dataclass(frozen=True)
class Tally:
    new_wins: int = 0
    serving_wins: int = 0
    ties: int = 0
    both_bad: int = 0  # Neither reply is good enough to prefer: left out of the estimate.
    reward_model_agreed: int = 0  # Decided judgments where the reward model preferred the same reply.
    open_comparisons: int = 0  # Head-to-heads still short of their overlap target.

    @property
    def games(self) -> int:
        return self.new_wins + self.serving_wins + self.ties

    @property
    def decided(self) -> int:
        return self.new_wins + self.serving_wins


@dataclass(frozen=True)
class Estimate:
    judgments: int
    p_new_beats_serving: float | None
    low: float | None
    high: float | None
    confidence: float
    reward_model_accuracy: float | None  # On the new policy's own replies, against the people.

    def to_dict(self) -> dict:
        return asdict(self)


def wilson_interval(successes: float, trials: int, confidence: float) -> tuple[float, float]:
    """Wilson's score interval: (p + z²/2n ± z sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)."""
    if trials == 0:
        return 0.0, 1.0
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    spread = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - spread), min(1.0, centre + spread)


def estimate(tally: Tally, *, confidence: float) -> Estimate:
    games = tally.games
    accuracy = tally.reward_model_agreed / tally.decided if tally.decided else None
    if games == 0:
        return Estimate(0, None, None, None, confidence, accuracy)
    wins = tally.new_wins + 0.5 * tally.ties
    low, high = wilson_interval(wins, games, confidence)
    return Estimate(games, wins / games, low, high, confidence, accuracy)


def verdict_due(tally: Tally, *, judgments_wanted: int) -> bool:
    """The verdict is given once enough judgments arrived, or when no head-to-head is left to judge."""
    return tally.games >= judgments_wanted or tally.open_comparisons == 0


def promotes(result: Estimate, *, promote_above: float) -> bool:
    """Promote only when the people's interval says the new policy is not worse than `promote_above`."""
    return result.low is not None and result.low > promote_above
