"""The settings of one training round, validated once when an admin starts it and stored with it."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from preference_app.core.services import InvalidInput

REFERENCES = ("base", "previous")
# What the policy step trains on: people's pairs only; those plus the round's reward model's
# best-vs-worst pairs of fresh on-policy replies (online iterative DPO); or SFT on the reward
# model's best of n replies (rejection sampling).
POLICY_DATA = ("human", "reward_labelled", "best_of_n")
# Settings of earlier versions that stored rounds may still carry; ignored when read back.
RETIRED_SETTINGS = {"promote_only_if_not_worse"}
PAIRINGS = ("random", "best_vs_worst")


@dataclass(frozen=True)
class RoundSettings:
    # Step 1: generation and collection.
    prompts_per_round: int = 16  # Prompts that get fresh candidates this round.
    candidates_per_prompt: int = 2  # K replies sampled per prompt.
    max_new_tokens: int = 96
    temperature: float = 0.8
    pairing: str = "random"  # "best_vs_worst" pairs the serving reward model's best and worst reply.
    head_to_head: bool = True  # Also pair the previous policy's reply against the current one.
    overlap_target: int = 1  # Annotators per comparison.
    judgment_target: int = 32  # Judgments this round collects before training starts by itself.
    # Step 2: reward model.
    reward_learning_rate: float = 1e-5
    reward_epochs: int = 1
    reward_use_margin: bool = False  # Demand a reward gap as large as the judgment's strength.
    # Step 3: policy (SFT on demonstrations first, when there are any, then DPO).
    policy_data: str = "human"  # One of POLICY_DATA.
    labelled_prompts: int = 64  # Training-pool prompts whose on-policy replies the reward model labels.
    labelled_candidates: int = 4  # Replies sampled per such prompt (n of best-of-n).
    min_reward_gap: float = 0.5  # Best minus worst reward, in sds of all the batch's rewards, to keep a pair.
    beta: float = 0.1
    learning_rate: float = 5e-6
    epochs: int = 1
    # Scale DPO's epochs to the data: enough passes for about AUTO_TARGET_STEPS optimiser steps,
    # between `epochs` and AUTO_MAX_EPOCHS (see `dpo_epochs_for`).
    auto_epochs: bool = True
    sft_learning_rate: float = 2e-5
    batch_size: int = 8
    max_length: int = 512
    reference: str = "base"  # DPO's reference: the base model or the previous round's policy.
    # When the round ran SFT on demonstrations first, DPO's reference is that SFT model, as in the
    # DPO paper (Rafailov et al. 2023, section 4: pi_ref = pi_SFT), whatever `reference` says.
    reference_follows_sft: bool = True
    lora_rank: int = 0  # 0 trains every weight.
    # Evaluation on the frozen evaluation set, and promotion decided by people.
    eval_max_new_tokens: int = 64
    evaluation_prompts: int = 50  # How many of the evaluation set's prompts (in its order) are used.
    verdict_judgments: int = 40  # Human judgments of the blind head-to-heads before the verdict.
    verdict_confidence: float = 0.90  # Two-sided confidence of the interval on P(new beats serving).
    promote_above: float = 0.45  # Promote when that interval's lower bound is above this.
    # The guard: a policy whose KL to its reference or whose share of ended replies ran away is
    # refused before people are asked to judge it.
    kl_guard: float = 15.0  # Nats per reply (k3 on the evaluation replies).
    eos_drop_guard: float = 0.3  # Largest fall in the share of replies that end, new against serving.
    # Over-optimisation warnings on the dashboard.
    warn_accuracy_drop: float = 0.15  # Reward-model accuracy on the new replies below held-out by more.
    warn_kl: float = 10.0  # KL to the reference (nats per reply) above this.
    warn_length_ratio: float = 1.5  # Mean reply length changed by more than this factor.
    # Step 4: the loop.
    auto_rounds: int = 0  # Rounds still to start automatically after this one completes.
    auto_start_after_judgments: int = 0  # 0: off; else the next round starts once this many new judgments arrive.
    # An auto-loop goes on only while the people's verdict shows a gain: the lower bound of the
    # interval on P(new beats serving) must exceed 0.5 by at least this much.
    min_win_rate_gain: float = 0.0
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RoundSettings:
        """Build settings from form or API values, coercing types and rejecting nonsense clearly."""
        known = {field.name: field for field in fields(cls)}
        values = {name: value for name, value in values.items() if name not in RETIRED_SETTINGS}
        unknown = set(values) - set(known)
        if unknown:
            raise InvalidInput(f"Unknown round settings: {', '.join(sorted(unknown))}.")
        parsed: dict[str, Any] = {}
        for name, value in values.items():
            kind = type(getattr(cls(), name))
            try:
                if kind is bool:
                    parsed[name] = value if isinstance(value, bool) else str(value).lower() in {"1", "true", "on", "yes"}
                else:
                    parsed[name] = kind(value)
            except (TypeError, ValueError):
                raise InvalidInput(f"{name} must be a {kind.__name__}, not {value!r}.") from None
        settings = cls(**parsed)
        settings.validate()
        return settings

    def validate(self) -> None:
        positive = ["prompts_per_round", "max_new_tokens", "overlap_target", "judgment_target", "reward_epochs",
                    "epochs", "batch_size", "max_length", "eval_max_new_tokens", "evaluation_prompts",
                    "verdict_judgments"]
        for name in positive:
            if getattr(self, name) < 1:
                raise InvalidInput(f"{name} must be at least 1.")
        if self.candidates_per_prompt < 2:
            raise InvalidInput("candidates_per_prompt must be at least 2 to form a comparison.")
        for name in ("reward_learning_rate", "learning_rate", "sft_learning_rate", "beta"):
            if not 0 < getattr(self, name) < 1:
                raise InvalidInput(f"{name} must be between 0 and 1.")
        if not 0.5 <= self.verdict_confidence < 1:
            raise InvalidInput("verdict_confidence must be at least 0.5 and below 1.")
        if not 0 <= self.promote_above < 1:
            raise InvalidInput("promote_above must be between 0 and 1.")
        if not 0 <= self.warn_accuracy_drop <= 1 or self.warn_kl <= 0 or self.warn_length_ratio <= 1:
            raise InvalidInput("warn_accuracy_drop must be in [0, 1], warn_kl positive and warn_length_ratio above 1.")
        if not 0 <= self.temperature <= 2:
            raise InvalidInput("temperature must be between 0 and 2.")
        if self.reference not in REFERENCES:
            raise InvalidInput(f"reference must be one of {', '.join(REFERENCES)}.")
        if self.policy_data not in POLICY_DATA:
            raise InvalidInput(f"policy_data must be one of {', '.join(POLICY_DATA)}.")
        if self.labelled_prompts < 1 or self.labelled_candidates < 2 or self.min_reward_gap < 0:
            raise InvalidInput("labelled_prompts must be at least 1, labelled_candidates at least 2, "
                               "min_reward_gap not negative.")
        if self.kl_guard <= 0 or not 0 < self.eos_drop_guard <= 1:
            raise InvalidInput("kl_guard must be positive and eos_drop_guard in (0, 1].")
        if self.pairing not in PAIRINGS:
            raise InvalidInput(f"pairing must be one of {', '.join(PAIRINGS)}.")
        if self.lora_rank < 0 or self.auto_rounds < 0 or self.auto_start_after_judgments < 0:
            raise InvalidInput("lora_rank, auto_rounds and auto_start_after_judgments cannot be negative.")
        if self.prompts_per_round > 1000 or self.candidates_per_prompt > 16 or self.max_new_tokens > 2048:
            raise InvalidInput("At most 1000 prompts, 16 candidates and 2048 new tokens per round.")


AUTO_TARGET_STEPS = 32
AUTO_MAX_EPOCHS = 4


def dpo_epochs_for(round_settings: RoundSettings, pairs: int) -> int:
    """DPO epochs for `pairs` training pairs: the rule behind `auto_epochs`.

    epochs = clamp(ceil(AUTO_TARGET_STEPS * batch_size / pairs), epochs, AUTO_MAX_EPOCHS)

    A round of 30 human pairs at batch 8 is 4 optimiser steps an epoch, too few to move a policy at
    a learning rate that is safe for a thousand pairs; so small data gets more passes (at most 4,
    where memorising the pairs starts), and large data keeps the configured `epochs`.
    """
    if not round_settings.auto_epochs or pairs < 1:
        return round_settings.epochs
    wanted = math.ceil(AUTO_TARGET_STEPS * round_settings.batch_size / pairs)
    return max(round_settings.epochs, min(AUTO_MAX_EPOCHS, wanted))


# Presets for the start form, tuned for this project's 2-core CPU machine with SmolLM2-135M: a
# round's time is dominated by sampling (about 1.5 replies/s batched) and DPO (about 0.7 pairs/s).
PRESETS: dict[str, dict[str, Any]] = {
    "quick_demo": {
        "prompts_per_round": 8, "candidates_per_prompt": 2, "max_new_tokens": 48, "judgment_target": 8,
        "max_length": 384, "eval_max_new_tokens": 48, "evaluation_prompts": 10, "verdict_judgments": 10,
        "policy_data": "human", "learning_rate": 1e-5,
    },
    "standard": {
        "prompts_per_round": 32, "candidates_per_prompt": 4, "max_new_tokens": 96, "judgment_target": 64,
        "max_length": 512, "eval_max_new_tokens": 64, "evaluation_prompts": 50, "verdict_judgments": 40,
        "policy_data": "reward_labelled", "labelled_prompts": 64, "labelled_candidates": 4, "learning_rate": 1e-5,
        "reward_epochs": 2,
    },
    "careful": {
        "prompts_per_round": 64, "candidates_per_prompt": 4, "max_new_tokens": 128, "judgment_target": 128,
        "overlap_target": 2, "max_length": 768, "eval_max_new_tokens": 96, "evaluation_prompts": 50,
        "verdict_judgments": 100, "verdict_confidence": 0.95, "policy_data": "reward_labelled",
        "labelled_prompts": 128, "labelled_candidates": 8, "learning_rate": 5e-6, "kl_guard": 10.0,
        "reward_epochs": 3,
    },
}
