"""The dashboard's per-round charts, built from the metrics each completed step stored."""

from __future__ import annotations

import math

from django.utils.safestring import SafeString, mark_safe

from preference_app.core.models import TrainingRound
from preference_app.rounds.plots import Series, line_chart


def _series(rounds: list[TrainingRound], name: str, key: str) -> Series:
    return Series(name, [(r.number, float(r.metrics[key])) for r in rounds if r.metrics.get(key) is not None])


def round_charts(history: list[TrainingRound]) -> list[SafeString]:
    """SVG charts, oldest round first, of the metrics some round has stored; none before the first
    round, so a fresh dashboard shows one line instead of empty frames. plots.line_chart escapes
    every label it draws.

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
        _chart("RM accuracy: held-out vs new replies",
               [_series(rounds, "held-out", "reward_held_out_accuracy"),
                _series(rounds, "on new replies (people)", "reward_accuracy_on_new_replies")],
               x_label="round (a widening gap: over-optimisation)", y_label="accuracy"),
        _chart("DPO reward accuracy and margin", [_series(rounds, "accuracy", "dpo_reward_accuracy"),
                                                  _series(rounds, "margin", "dpo_reward_margin")],
               x_label="round", y_label="value"),
        _chart("P(new beats serving): people vs RM",
               [_series(rounds, "people", "human_win_rate"), _series(rounds, "people, low", "human_win_rate_low"),
                _series(rounds, "reward model", "reward_model_win_rate")],
               x_label="round", y_label="P(new beats serving)"),
        _chart("KL to the reference (k3 estimator)", [_series(rounds, "KL", "kl_k3")], x_label="round",
               y_label="nats per reply"),
        _chart("Mean reply length", [_series(rounds, "new", "mean_length_new"),
                                     _series(rounds, "serving", "mean_length_serving")],
               x_label="round", y_label="tokens"),
        _chart("Normalised reward against sqrt(KL)", [over_optimisation],
               x_label="sqrt(KL), nats (k3)", y_label="reward, sd of base replies", lines=False),
        *_online_step_charts(rounds),
    ]
    return [mark_safe(chart) for chart in charts if chart]  # noqa: S308 - every label was escaped by line_chart.


def _chart(title: str, series: list[Series], **options) -> str:
    """The chart, or an empty string when none of its series has a point yet."""
    return line_chart(title, series, **options) if any(one.points for one in series) else ""


def _online_step_charts(rounds: list[TrainingRound]) -> list[str]:
    """Per-step charts of the latest round whose policy step was online (PPO, RLOO or GRPO), none
    when no round ran one. Its reward is the round's own reward model's raw score on the sampled
    replies, and its KL the k1 estimate per reply to the step's reference on those replies."""
    online = [r for r in rounds if r.metrics.get("online_history")]
    if not online:
        return []
    latest = online[-1]
    history = latest.metrics["online_history"]
    name = f"round {latest.number}, {latest.metrics.get('policy_step', 'online')}"

    def per_step(key: str) -> Series:
        return Series(name, [(entry["step"], float(entry[key])) for entry in history if entry.get(key) is not None])

    reward_against_kl = Series(name, [
        (math.sqrt(max(0.0, entry["kl"])), float(entry["reward_mean"]))
        for entry in history if entry.get("kl") is not None and entry.get("reward_mean") is not None
    ])
    return [
        _chart("Policy step: mean reward per step", [per_step("reward_mean")], x_label="step",
               y_label="reward-model score"),
        _chart("Policy step: KL per step", [per_step("kl")], x_label="step", y_label="nats per reply (k1)"),
        _chart("Policy step: reward against sqrt(KL)", [reward_against_kl], x_label="sqrt(KL), nats (k1)",
               y_label="reward-model score"),
    ]
