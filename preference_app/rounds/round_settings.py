"""The settings of one training round, validated once when an admin starts it and stored with it."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from preference_app.core.errors import InvalidInput

REFERENCES = ("base", "previous")
# What the policy step trains on: people's pairs only; those plus the round's reward model's
# best-vs-worst pairs of fresh on-policy replies (online iterative DPO); or SFT on the reward
# model's best of n replies (rejection sampling).
POLICY_DATA = ("human", "reward_labelled", "best_of_n")
# How the policy step trains: DPO on pairs, or online reinforcement learning against the round's
# new reward model (PPO with a critic; RLOO and GRPO with k replies per prompt as the baseline).
POLICY_STEPS = ("dpo", "ppo", "rloo", "grpo")
ONLINE_POLICY_STEPS = ("ppo", "rloo", "grpo")
# Settings of earlier versions that stored rounds may still carry; ignored when read back.
RETIRED_SETTINGS = {"promote_only_if_not_worse"}
PAIRINGS = ("random", "best_vs_worst")
# How the reward model learns: the whole policy with a scalar head, or a linear head on its frozen
# middle-layer features (training.reward_probe); "auto" picks by the number of training pairs.
REWARD_METHODS = ("auto", "finetune", "linear_probe")
# Below this many pairs "auto" uses the probe. bench/loop_learning.py measured a fine-tuned reward
# model at chance (0.48-0.57 held out) from 15-33 pairs, where the probe ranked 0.70-0.84 from 7-26
# (README, "Does it learn"); fine-tuning is the published recipe at the thousands of pairs of
# HH-RLHF, and a thousand is where this project's hh_reward_accuracy benchmark starts.
PROBE_MAX_PAIRS = 1000


@dataclass(frozen=True)
class Bound:
    """The values a numeric setting may take: from `low` to `high`, either end open when asked.

    The bounds keep each value inside what stores it and what uses it: a PostgreSQL smallint
    (overlap_target), torch.manual_seed's range (seed), a JSON column (no nan or infinity), and
    sizes that finish on this project's machines in hours, not years.
    """

    low: float
    high: float
    low_open: bool = False
    high_open: bool = False

    def admits(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def __str__(self) -> str:
        low = f"above {self.low}" if self.low_open else f"at least {self.low}"
        high = f"below {self.high}" if self.high_open else f"at most {self.high}"
        return f"{low} and {high}"


# The start form's fieldsets, in the order of the seed's steps; the last is folded away on the page.
COLLECTION, REWARD_MODEL, POLICY = "Collection", "Reward model", "Policy"
EVALUATION, LOOP, ADVANCED = "Evaluation and verdict", "Loop", "Advanced"
SETTING_GROUPS = (COLLECTION, REWARD_MODEL, POLICY, EVALUATION, LOOP, ADVANCED)


def _setting(default, low=None, high=None, *, low_open=False, high_open=False, choices=(), label, help, group):
    """A RoundSettings field with its bounds (numbers) or choices (strings) beside its default, and
    the label, one line of help and the fieldset the start form shows it with."""
    metadata: dict[str, Any] = {"label": label, "help": help, "group": group}
    if choices:
        metadata["choices"] = choices
    if low is not None:
        metadata["bound"] = Bound(low, high, low_open, high_open)
    return field(default=default, metadata=metadata)


def _rate(default, *, label, help, group):
    """A learning rate or DPO's beta: strictly between 0 and 1."""
    return _setting(default, 0, 1, low_open=True, high_open=True, label=label, help=help, group=group)


# The largest seed torch.manual_seed and numpy accept alike; larger ones overflow in the worker.
MAX_SEED = 2**32 - 1


@dataclass(frozen=True)
class RoundSettings:
    # Step 1: generation and collection.
    prompts_per_round: int = _setting(
        16, 1, 1000, group=COLLECTION, label="Prompts per round",
        help="Prompts that get fresh replies from the serving policy this round.")
    candidates_per_prompt: int = _setting(
        2, 2, 16, group=COLLECTION, label="Replies per prompt (K)",
        help="Replies sampled for each prompt; every two of them form one comparison for people to judge.")
    max_new_tokens: int = _setting(
        96, 1, 2048, group=COLLECTION, label="Reply length in new tokens",
        help="The most tokens the policy writes per reply, here and in the online policy steps.")
    temperature: float = _setting(
        0.8, 0, 2, group=ADVANCED, label="Sampling temperature",
        help="Higher gives more varied replies; 0 always picks the likeliest token.")
    pairing: str = _setting(
        "random", choices=PAIRINGS, group=COLLECTION, label="Pairing",
        help="Which two replies people compare: any two, or the serving reward model's best against its worst.")
    head_to_head: bool = _setting(
        True, group=COLLECTION, label="Previous policy head-to-head",
        help="Also pair the previous policy's reply against the current one's, for the leaderboard.")
    # A PostgreSQL smallint column.
    overlap_target: int = _setting(
        1, 1, 50, group=COLLECTION, label="Annotators per comparison",
        help="How many people judge each comparison; more than one gives agreement figures.")
    judgment_target: int = _setting(
        32, 0, 100_000, group=COLLECTION, label="Judgments before training",
        help="Training starts by itself once this many judgments arrive (or when an admin presses Train now); "
             "0 trains as soon as the candidates exist, on the judgments already stored (imports, earlier rounds).")
    # Step 2: reward model.
    reward_method: str = _setting(
        "auto", choices=REWARD_METHODS, group=REWARD_MODEL, label="Reward-model method",
        help=f"finetune: train the whole model; linear_probe: a linear head on frozen features, for tens of "
             f"pairs; auto: the probe below {PROBE_MAX_PAIRS} training pairs, else finetune.")
    reward_learning_rate: float = _rate(
        1e-5, group=REWARD_MODEL, label="Reward-model learning rate",
        help="Step size of the reward model's optimiser, above 0 and below 1.")
    reward_epochs: int = _setting(
        1, 1, 20, group=REWARD_MODEL, label="Reward-model epochs",
        help="Passes over the judgments; the epoch with the best held-out accuracy is kept.")
    reward_use_margin: bool = _setting(
        False, group=REWARD_MODEL, label="Use judgment strength as a margin",
        help="Ask for a reward gap as large as the strength (1-4) people gave.")
    # Step 3: policy (SFT on demonstrations first, when there are any, then DPO).
    policy_data: str = _setting(
        "human", choices=POLICY_DATA, group=POLICY, label="Policy training data",
        help="human: people's pairs only; reward_labelled: also pairs the new reward model ranks; "
             "best_of_n: fine-tune on the reward model's best of n replies.")
    labelled_prompts: int = _setting(
        64, 1, 2000, group=POLICY, label="Prompts the reward model labels",
        help="Training-pool prompts whose fresh replies the new reward model ranks (reward_labelled, best_of_n).")
    labelled_candidates: int = _setting(
        4, 2, 16, group=POLICY, label="Replies per labelled prompt (n)",
        help="Replies sampled for each prompt the reward model labels: the n of best-of-n.")
    min_reward_gap: float = _setting(
        0.5, 0, 10, group=ADVANCED, label="Smallest reward gap kept",
        help="A labelled pair is kept when best minus worst reward is at least this many sds of the batch's rewards.")
    beta: float = _rate(
        0.1, group=POLICY, label="DPO beta",
        help="How strongly DPO holds the policy near its reference; smaller lets it drift further.")
    learning_rate: float = _rate(
        5e-6, group=POLICY, label="Policy learning rate",
        help="Step size of DPO or of the online policy step, above 0 and below 1.")
    epochs: int = _setting(
        1, 1, 20, group=POLICY, label="Policy epochs",
        help="DPO's passes over its pairs (the fewest, when epochs scale to the data).")
    # Scale DPO's epochs to the data: enough passes for about AUTO_TARGET_STEPS optimiser steps,
    # between `epochs` and AUTO_MAX_EPOCHS (see `dpo_epochs_for`).
    auto_epochs: bool = _setting(
        True, group=ADVANCED, label="Scale epochs to the data",
        help="Few pairs get more DPO passes (up to 4), so that training takes enough optimiser steps.")
    sft_learning_rate: float = _rate(
        2e-5, group=ADVANCED, label="SFT learning rate",
        help="Step size of fine-tuning on the replies annotators wrote or edited.")
    batch_size: int = _setting(
        8, 1, 256, group=ADVANCED, label="Batch size",
        help="Pairs or examples per optimiser step.")
    max_length: int = _setting(
        512, 1, 8192, group=ADVANCED, label="Longest training example in tokens",
        help="Prompt and reply tokens kept per training example; SmolLM2's context is 8192.")
    reference: str = _setting(
        "base", choices=REFERENCES, group=POLICY, label="DPO reference",
        help="The model DPO measures the policy against: the base model or the previous round's policy.")
    # When the round ran SFT on demonstrations first, DPO's reference is that SFT model, as in the
    # DPO paper (Rafailov et al. 2023, section 4: pi_ref = pi_SFT), whatever `reference` says.
    reference_follows_sft: bool = _setting(
        True, group=ADVANCED, label="SFT model becomes DPO's reference",
        help="After SFT on demonstrations, DPO measures against the SFT model, as in the DPO paper.")
    lora_rank: int = _setting(
        0, 0, 256, group=ADVANCED, label="LoRA rank",
        help="Train low-rank adapters of this rank instead of the whole model; 0 trains every weight.")
    # DPO, or an online step (ppo, rloo, grpo) that samples from the policy and learns from the
    # round's new reward model's scores, at `learning_rate` and `max_new_tokens`.
    policy_step: str = _setting(
        "dpo", choices=POLICY_STEPS, group=POLICY, label="Policy step",
        help="dpo trains on pairs; ppo, rloo and grpo sample replies and learn from the new reward model's scores.")
    online_steps: int = _setting(
        16, 1, 1000, group=ADVANCED, label="Online iterations",
        help="Sample-then-update iterations of ppo, rloo or grpo.")
    online_prompts_per_step: int = _setting(
        8, 1, 256, group=ADVANCED, label="Prompts per online iteration",
        help="Training-pool prompts sampled in each online iteration.")
    online_samples_per_prompt: int = _setting(
        4, 2, 64, group=ADVANCED, label="Replies per online prompt (rloo, grpo)",
        help="Replies per prompt for rloo and grpo, each judged against its siblings.")
    ppo_epochs: int = _setting(
        4, 1, 20, group=ADVANCED, label="PPO passes per batch",
        help="PPO's passes over each batch of sampled replies.")
    # PPO's per-token and RLOO's per-reply beta, GRPO's weight on its k3 term.
    kl_coef: float = _setting(
        0.05, 0, 10, group=ADVANCED, label="Online KL penalty",
        help="Weight of the online steps' KL penalty toward the reference; 0 leaves GRPO without one.")
    # Evaluation on the frozen evaluation set, and promotion decided by people.
    eval_max_new_tokens: int = _setting(
        64, 1, 2048, group=ADVANCED, label="Evaluation reply length in new tokens",
        help="The most tokens each policy writes per evaluation reply.")
    # An evaluation set holds at most 2000 prompts.
    evaluation_prompts: int = _setting(
        50, 1, 2000, group=EVALUATION, label="Evaluation prompts",
        help="How many prompts of the frozen evaluation set (in its order) both policies answer.")
    verdict_judgments: int = _setting(
        40, 1, 10_000, group=EVALUATION, label="Judgments for the verdict",
        help="People's judgments of the blind head-to-heads, new against serving, before the verdict.")
    verdict_confidence: float = _setting(
        0.90, 0.5, 1, high_open=True, group=EVALUATION, label="Verdict confidence",
        help="Two-sided confidence of the interval on P(new beats serving).")
    promote_above: float = _setting(
        0.45, 0, 1, high_open=True, group=EVALUATION, label="Promote above",
        help="The new policy is promoted when that interval's lower end is above this.")
    # The guard: a policy whose KL to its reference or whose share of ended replies ran away is
    # refused before people are asked to judge it.
    kl_guard: float = _setting(
        15.0, 0, 10_000, low_open=True, group=ADVANCED, label="KL guard (nats per reply)",
        help="A new policy whose KL to its reference passes this is refused before people judge it.")
    eos_drop_guard: float = _setting(
        0.3, 0, 1, low_open=True, group=ADVANCED, label="Ended-reply drop guard",
        help="A new policy whose share of replies that end falls by more than this is refused.")
    # Over-optimisation warnings on the dashboard.
    warn_accuracy_drop: float = _setting(
        0.15, 0, 1, group=ADVANCED, label="Warn at reward-model accuracy drop",
        help="Warn when the reward model's accuracy on the new replies is this far below its held-out accuracy.")
    warn_kl: float = _setting(
        10.0, 0, 10_000, low_open=True, group=ADVANCED, label="Warn above KL (nats per reply)",
        help="Warn when the new policy's KL to its reference is above this.")
    warn_length_ratio: float = _setting(
        1.5, 1, 100, low_open=True, group=ADVANCED, label="Warn at length change",
        help="Warn when the mean reply length changes by more than this factor.")
    # Step 4: the loop.
    auto_rounds: int = _setting(
        0, 0, 100, group=LOOP, label="Rounds to start automatically",
        help="Rounds still to start by themselves after this one completes.")
    auto_start_after_judgments: int = _setting(
        0, 0, 100_000, group=LOOP, label="Start after new judgments",
        help="0: off; else the next round starts once this many new judgments arrive.")
    # The lower bound of the interval on P(new beats serving) must exceed 0.5 by at least this
    # much, so it is at most 0.5.
    min_win_rate_gain: float = _setting(
        0.0, 0, 0.5, group=LOOP, label="Win-rate gain to go on",
        help="The auto-loop goes on only while people's interval on P(new beats serving) is above 0.5 by this.")
    seed: int = _setting(
        0, 0, MAX_SEED, group=ADVANCED, label="Random seed",
        help="Seeds sampling and training, so a round can be repeated.")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RoundSettings:
        """Build settings from form or API values, coercing types and rejecting nonsense clearly."""
        if not isinstance(values, dict):
            raise InvalidInput("Round settings must be an object of setting names and values.")
        known = {setting.name: setting for setting in fields(cls)}
        values = {name: value for name, value in values.items() if name not in RETIRED_SETTINGS}
        unknown = set(values) - set(known)
        if unknown:
            raise InvalidInput(f"Unknown round settings: {', '.join(sorted(map(str, unknown)))}.")
        settings = cls(**{name: _parsed(name, type(known[name].default), value) for name, value in values.items()})
        settings.validate()
        return settings

    def validate(self) -> None:
        """Check every value against the bounds or choices declared beside its field."""
        for setting in fields(self):
            value = getattr(self, setting.name)
            bound, choices = setting.metadata.get("bound"), setting.metadata.get("choices")
            # An int is never nan or infinite (and math.isfinite cannot take one beyond a float's range).
            if bound is not None and not ((isinstance(value, int) or math.isfinite(value)) and bound.admits(value)):
                raise InvalidInput(f"{setting.name} must be {bound}, not {_shown(value)}.")
            if choices and value not in choices:
                raise InvalidInput(f"{setting.name} must be one of {', '.join(choices)}, not {_shown(value)}.")
        # An online step makes its own data by sampling, and its trainers update every weight, so
        # settings that only shape DPO's data or adapters would be silently ignored; refuse them.
        if self.policy_step in ONLINE_POLICY_STEPS:
            if self.policy_data != "human":
                raise InvalidInput(f"policy_step {self.policy_step} samples its own replies; "
                                   f"policy_data must be human, not {_shown(self.policy_data)}.")
            if self.lora_rank:
                raise InvalidInput(f"policy_step {self.policy_step} trains every weight; lora_rank must be 0.")


_TRUE, _FALSE = {"1", "true", "on", "yes"}, {"0", "false", "off", "no", ""}
_KINDS = {int: "a whole number", float: "a number", str: "text"}


def _shown(value: Any) -> str:
    """A refused value as the message quotes it, cut short: a 400-digit seed need not be echoed whole."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


def _parsed(name: str, kind: type, value: Any) -> Any:
    """One form or JSON value as the setting's type; a value that is not plainly of it is refused."""
    if kind is bool:
        if isinstance(value, bool):
            return value
        if str(value).strip().lower() in _TRUE | _FALSE:
            return str(value).strip().lower() in _TRUE
        raise InvalidInput(f"{name} must be true or false, not {_shown(value)}.")
    if kind is str:
        if not isinstance(value, str):
            raise InvalidInput(f"{name} must be {_KINDS[kind]}, not {_shown(value)}.")
        return value
    # JSON true and false are ints to Python; a number setting takes numbers or their text only.
    refusal = InvalidInput(f"{name} must be {_KINDS[kind]}, not {_shown(value)}.")
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise refusal
    try:
        return float(value) if kind is float else _whole_number(value)
    except (ValueError, OverflowError):
        raise refusal from None


def _whole_number(value: int | float | str) -> int:
    """An int from an int, a whole float (JSON 3.0, 1e12) or decimal text; 2.5 is refused, not cut to 2."""
    if isinstance(value, str):
        return int(value.strip())
    if isinstance(value, float) and not value.is_integer():
        raise ValueError(value)
    return int(value)


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
# The standard preset's policy step is the one bench/loop_learning.py measured learning a hidden
# rule from 64 judgments a round (README, "Does it learn from 64 judgments a round?"): 8 replies for
# each of up to 128 training-pool prompts ranked by the reward model, DPO at 3.5e-5. At 2e-5 the
# policy hardly moved (KL 2 nats, preference 0.55); at 5e-5 the second round went over the KL guard,
# and so did the second round of an easier rule (in_paragraphs) at 3.5e-5: the guard catches that.
PRESETS: dict[str, dict[str, Any]] = {
    "quick_demo": {
        "prompts_per_round": 8, "candidates_per_prompt": 2, "max_new_tokens": 48, "judgment_target": 8,
        "max_length": 384, "eval_max_new_tokens": 48, "evaluation_prompts": 10, "verdict_judgments": 10,
        "policy_data": "human", "learning_rate": 1e-5,
    },
    "standard": {
        "prompts_per_round": 32, "candidates_per_prompt": 4, "max_new_tokens": 96, "judgment_target": 64,
        "max_length": 512, "eval_max_new_tokens": 64, "evaluation_prompts": 50, "verdict_judgments": 40,
        "policy_data": "reward_labelled", "labelled_prompts": 128, "labelled_candidates": 8, "learning_rate": 3.5e-5,
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
# The round `make demo` starts in the background (the demo_round command): the quick demo preset,
# training at once on the bundled HH-RLHF pairs rather than waiting for judgments, so a newcomer sees
# a second policy version, its charts and its blind head-to-heads within minutes.
DEMO_ROUND: dict[str, Any] = {**PRESETS["quick_demo"], "judgment_target": 0, "auto_epochs": False, "epochs": 1}


def reward_method_for(round_settings: RoundSettings, pairs: int) -> str:
    """The reward model's method for `pairs` training pairs: the rule behind `reward_method="auto"`."""
    if round_settings.reward_method != "auto":
        return round_settings.reward_method
    return "linear_probe" if pairs < PROBE_MAX_PAIRS else "finetune"
