"""What a round with given settings will do, in a few plain sentences, and a rough CPU time for it."""

from __future__ import annotations

from dataclasses import dataclass

from preference_app.rounds.round_settings import ONLINE_POLICY_STEPS, RoundSettings, dpo_epochs_for

# Per-unit costs derived from the README's round-time measurement (the Performance table's "one
# full round with SmolLM2-135M from 64 judged comparisons", `bench/round.py` on the project's 2-core
# CPU, 27 November 2026, measured while other jobs ran): 32 prompts x K=4 replies of up to 64 new
# tokens, max length 512, batch 8, one reward-model and one DPO epoch (it predates auto_epochs).
# Generation took 105.7 s for 32 x 4 x 64 = 8,192 new tokens at most.
GENERATION_SECONDS_PER_TOKEN = 105.7 / (32 * 4 * 64)
# The reward model took 86.1 s for one epoch over the 64 judged pairs.
REWARD_SECONDS_PER_PAIR_EPOCH = 86.1 / 64
# DPO took 233.2 s for one epoch over the same 64 pairs; SFT and the online steps' updates are
# counted at this rate too, for want of a measurement of their own.
POLICY_SECONDS_PER_PAIR_EPOCH = 233.2 / 64
# Evaluation took 31.4 s for the new and the serving policy each answering 50 prompts in at most
# 64 new tokens (many of its replies end early, hence the lower rate than generation's).
EVALUATION_SECONDS_PER_TOKEN = 31.4 / (50 * 2 * 64)
ESTIMATE_SOURCE = "the README's round-time measurement (bench/round.py on the project's 2-core CPU)"


@dataclass(frozen=True)
class RoundPlan:
    steps: list[str]
    cpu_seconds: float

    @property
    def cpu_minutes(self) -> int:
        return max(1, round(self.cpu_seconds / 60))


def round_plan(round_settings: RoundSettings) -> RoundPlan:
    """The steps a round with these settings takes, as sentences, and their CPU seconds (people's time aside)."""
    s = round_settings
    generation = s.prompts_per_round * s.candidates_per_prompt * s.max_new_tokens * GENERATION_SECONDS_PER_TOKEN
    reward = s.judgment_target * s.reward_epochs * REWARD_SECONDS_PER_PAIR_EPOCH
    policy_text, policy_seconds = _policy_step(s)
    evaluation = s.evaluation_prompts * 2 * s.eval_max_new_tokens * EVALUATION_SECONDS_PER_TOKEN
    people = "person" if s.overlap_target == 1 else "people"
    steps = [
        f"Generates {s.candidates_per_prompt} replies for each of {s.prompts_per_round} prompts "
        f"(up to {s.max_new_tokens} new tokens each).",
        f"Waits for {s.judgment_target} judgments ({s.overlap_target} {people} per comparison).",
        f"Trains a reward model ({_count(s.reward_epochs, 'epoch')}) and {policy_text}.",
        f"Asks people to judge {s.verdict_judgments} blind head-to-heads of the new policy against the serving one "
        f"on {s.evaluation_prompts} evaluation prompts; their verdict decides promotion.",
    ]
    if s.auto_rounds:
        steps.append(f"Then starts up to {_count(s.auto_rounds, 'more round')} by itself while people see a gain.")
    return RoundPlan(steps=steps, cpu_seconds=generation + reward + policy_seconds + evaluation)


def _policy_step(s: RoundSettings) -> tuple[str, float]:
    """The policy step in words, and its seconds: sampling at generation's rate, updates at DPO's."""
    if s.policy_step in ONLINE_POLICY_STEPS:
        samples = 1 if s.policy_step == "ppo" else s.online_samples_per_prompt
        replies = s.online_steps * s.online_prompts_per_step * samples
        passes = s.ppo_epochs if s.policy_step == "ppo" else 1
        seconds = replies * (s.max_new_tokens * GENERATION_SECONDS_PER_TOKEN + passes * POLICY_SECONDS_PER_PAIR_EPOCH / 2)
        return (f"{s.policy_step.upper()} for {_count(s.online_steps, 'iteration')} of "
                f"{s.online_prompts_per_step} prompts against it"), seconds
    labelling = s.labelled_prompts * s.labelled_candidates * s.max_new_tokens * GENERATION_SECONDS_PER_TOKEN
    if s.policy_data == "best_of_n":
        seconds = labelling + s.labelled_prompts * s.epochs * POLICY_SECONDS_PER_PAIR_EPOCH
        return (f"fine-tunes the policy on its best of {s.labelled_candidates} replies "
                f"to {s.labelled_prompts} more prompts"), seconds
    if s.policy_data == "reward_labelled":
        # At most one labelled pair per prompt: those whose reward gap is too small are dropped.
        pairs = s.judgment_target + s.labelled_prompts
        seconds = labelling + pairs * dpo_epochs_for(s, pairs) * POLICY_SECONDS_PER_PAIR_EPOCH
        return (f"DPO on people's pairs plus up to {s.labelled_prompts} pairs it picks among "
                f"{s.labelled_candidates} replies to each of {s.labelled_prompts} more prompts"), seconds
    pairs = s.judgment_target
    epochs = dpo_epochs_for(s, pairs)
    return f"DPO on people's pairs ({_count(epochs, 'epoch')})", pairs * epochs * POLICY_SECONDS_PER_PAIR_EPOCH


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"
