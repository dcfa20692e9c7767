"""The dashboard's per-round charts, built from the metrics each completed step stored."""

from __future__ import annotations

import math

from django.utils.safestring import SafeString, mark_safe

from preference_app.core.models import TrainingRound
from preference_app.rounds.plots import Series, line_chart


def _series(rounds: list[TrainingRound], name: str, key: str) -> Series:
    return Series(name, [(r.number, float(r.metrics[key])) for r in rounds if r.metrics.get(key) is not None])


def round_charts(history: list[TrainingRound]) -> list[SafeString]:
    """SVG charts, oldest round first. plots.line_chart escapes every label it draws.

    Rewards are each round's reward model's scores normalised on the base policy's replies to the
    frozen evaluation prompts (mean 0, sd 1), so rounds with different reward models share a scale.
    """
    rounds = sorted(history, key=lambda r: r.number)
    over_optimisation = Series(
        "new policy",
        [
            (math.sqrt(max(0.0, r.metrics["kl_k3"])), float(r.metrics["reward_new"]))
            for r in rounds
            if r.metrics.get("kl_k3") is not None and r.metrics.get("reward_new") is not None
        ],
    )
    charts = [
        line_chart("RM accuracy: held-out vs new replies",
                   [_series(rounds, "held-out", "reward_held_out_accuracy"),
                    _series(rounds, "on new replies (people)", "reward_accuracy_on_new_replies")],
                   x_label="round (a widening gap: over-optimisation)", y_label="accuracy"),
        line_chart("DPO reward accuracy and margin", [_series(rounds, "accuracy", "dpo_reward_accuracy"),
                                                      _series(rounds, "margin", "dpo_reward_margin")],
                   x_label="round", y_label="value"),
        line_chart("P(new beats serving): people vs RM",
                   [_series(rounds, "people", "human_win_rate"), _series(rounds, "people, low", "human_win_rate_low"),
                    _series(rounds, "reward model", "reward_model_win_rate")],
                   x_label="round", y_label="P(new beats serving)"),
        line_chart("KL to the reference (k3 estimator)", [_series(rounds, "KL", "kl_k3")], x_label="round",
                   y_label="nats per reply"),
        line_chart("Mean reply length", [_series(rounds, "new", "mean_length_new"),
                                         _series(rounds, "serving", "mean_length_serving")],
                   x_label="round", y_label="tokens"),
        line_chart("Normalised reward against sqrt(KL)", [over_optimisation],
                   x_label="sqrt(KL), nats (k3)", y_label="reward, sd of base replies", lines=False),
    ]
    return [mark_safe(chart) for chart in charts]  # noqa: S308 - every label was escaped by line_chart.
