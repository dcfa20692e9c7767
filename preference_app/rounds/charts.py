"""The dashboard's per-round charts, built from the metrics each completed step stored."""

from __future__ import annotations

import math

from django.utils.safestring import SafeString, mark_safe

from preference_app.core.models import TrainingRound
from preference_app.rounds.plots import Series, line_chart


def _series(rounds: list[TrainingRound], name: str, key: str) -> Series:
    return Series(name, [(r.number, float(r.metrics[key])) for r in rounds if r.metrics.get(key) is not None])


def round_charts(history: list[TrainingRound]) -> list[SafeString]:
    """SVG charts, oldest round first. plots.line_chart escapes every label it draws."""
    rounds = sorted(history, key=lambda r: r.number)
    over_optimisation = Series(
        "reward vs sqrt(KL)",
        [
            (math.sqrt(max(0.0, r.metrics["kl_to_reference"])), float(r.metrics["reward_mean_new"]))
            for r in rounds
            if r.metrics.get("kl_to_reference") is not None and r.metrics.get("reward_mean_new") is not None
        ],
    )
    charts = [
        line_chart("Reward model held-out accuracy", [_series(rounds, "accuracy", "reward_held_out_accuracy")],
                   x_label="round", y_label="accuracy"),
        line_chart("DPO reward accuracy and margin", [_series(rounds, "accuracy", "dpo_reward_accuracy"),
                                                      _series(rounds, "margin", "dpo_reward_margin")],
                   x_label="round", y_label="value"),
        line_chart("Win rate of the new policy", [_series(rounds, "vs previous", "win_rate_vs_previous"),
                                                  _series(rounds, "vs base", "win_rate_vs_base")],
                   x_label="round", y_label="win rate"),
        line_chart("KL to the reference", [_series(rounds, "KL", "kl_to_reference")], x_label="round", y_label="nats"),
        line_chart("Mean response length", [_series(rounds, "tokens", "mean_length_new")], x_label="round",
                   y_label="tokens"),
        line_chart("Reward against sqrt(KL) (over-optimisation)", [over_optimisation], x_label="sqrt(KL)",
                   y_label="mean reward", lines=False),
    ]
    return [mark_safe(chart) for chart in charts]  # noqa: S308 - every label was escaped by line_chart.
