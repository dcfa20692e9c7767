"""The policy step's parts: where checkpoints go, progress reports, on-policy replies labelled by the
round's reward model, and SFT then DPO (or SFT alone for best-of-n), or SFT then an online step
(PPO, RLOO or GRPO) against the round's new reward model.

steps.round_train_policy chooses among them by the round's `policy_data` and `policy_step` and
registers the results.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from django.conf import settings

from preference_app.core.errors import InvalidInput
from preference_app.core.model_store import serving_model
from preference_app.core.models import ModelVersion, TrainingRound
from preference_app.rounds import selectors
from preference_app.rounds.round_settings import ONLINE_POLICY_STEPS, RoundSettings, dpo_epochs_for
from training.data import pair_to_trl_record
from training.dpo import DPOConfig, train_dpo
from training.evaluate import reward_scores
from training.generate import GenerationConfig, generate_replies
from training.labelling import Labelled, label_with_rewards
from training.online import GRPOConfig, RLOOConfig, train_grpo, train_rloo
from training.optim import TrainingResult
from training.ppo import PPOConfig, train_ppo
from training.sft import SFTConfig, train_sft


def checkpoint_dir(training_round: TrainingRound, kind: str) -> Path:
    return Path(settings.MODELS_DIR) / f"round-{training_round.number}" / kind


def progress_reporter(round_id: int, label: str) -> Callable[[int, int, float], None]:
    """A training progress callback that writes to the round at most once a second."""
    last_write = [0.0]

    def report(step: int, total: int, loss: float) -> None:
        now = time.monotonic()
        if now - last_write[0] < 1.0 and step < total:
            return
        last_write[0] = now
        TrainingRound.objects.filter(pk=round_id).update(
            progress=step / max(1, total), step=f"{label}: step {step}/{total}, loss {loss:.4f}"
        )

    return report


def generation_reporter(round_id: int, label: str, prompts: int) -> Callable[[float], None]:
    """A generation progress callback: the round's progress bar and ETA follow the tokens written."""

    def report(fraction: float) -> None:
        TrainingRound.objects.filter(pk=round_id).update(
            progress=fraction, step=f"{label}: about {round(fraction * prompts)} of {prompts} prompts done"
        )

    return report


def label_on_policy_replies(training_round, policy_path: str, round_settings: RoundSettings) -> Labelled:
    """Sample n replies per training-pool prompt from the policy at `policy_path` (batched) and let
    the round's new reward model rank them. Evaluation prompts are never among them."""
    prompts = selectors.prompts_for_generation(limit=round_settings.labelled_prompts)
    if not prompts:
        raise InvalidInput("There are no training prompts to sample on-policy replies for; load or import some.")
    reward_model = ModelVersion.objects.get(training_round=training_round, kind=ModelVersion.Kind.REWARD)
    contexts = [[{"role": "user", "content": prompt.text}] for prompt in prompts]
    n = round_settings.labelled_candidates
    label = f"Sampling {len(contexts)} prompts x {n} on-policy replies for the reward model to label"
    TrainingRound.objects.filter(pk=training_round.pk).update(step=label, progress=0.0)
    report = generation_reporter(training_round.pk, label, len(contexts))
    sampling = GenerationConfig(candidates_per_context=n, max_new_tokens=round_settings.max_new_tokens,
                                temperature=round_settings.temperature, seed=round_settings.seed + 104729 * training_round.number)
    loaded = serving_model(policy_path)
    generated = generate_replies(loaded.model, loaded.tokenizer, contexts, sampling, progress_interval=1.0,
                                 on_progress=lambda progress: report(progress.fraction))
    texts = [[reply.text for reply in replies] for replies in generated]
    TrainingRound.objects.filter(pk=training_round.pk).update(step="The reward model ranks the on-policy replies")
    scores = reward_scores(reward_path=reward_model.path, contexts=[context for context in contexts for _ in range(n)],
                           texts=[text for replies in texts for text in replies], max_length=round_settings.max_length,
                           batch_size=round_settings.batch_size, device=settings.TRAINING_DEVICE or None)
    rewards = [scores[index * n:(index + 1) * n] for index in range(len(contexts))]
    labelled = label_with_rewards(contexts, texts, rewards, min_gap=round_settings.min_reward_gap)
    _labelled_data_save(training_round, labelled)
    return labelled


def _labelled_data_save(training_round, labelled: Labelled) -> None:
    """Keep the machine-labelled data beside the round's checkpoints, so what the policy learnt from
    can be audited and reproduced (TRL's preference and prompt-completion formats)."""
    directory = Path(settings.MODELS_DIR) / f"round-{training_round.number}"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "reward-labelled-pairs.jsonl").write_text(
        "".join(json.dumps(pair_to_trl_record(pair)) + "\n" for pair in labelled.pairs)
    )
    (directory / "best-of-n.jsonl").write_text("".join(
        json.dumps({"prompt": item.prompt, "completion": [{"role": "assistant", "content": item.completion}]}) + "\n"
        for item in labelled.demonstrations
    ))


@dataclass(frozen=True)
class SFTStep:
    start_path: str  # Where DPO starts: the SFT model when there were demonstrations, else the serving policy.
    result: TrainingResult | None
    config: dict


@dataclass(frozen=True)
class TrainedPolicy:
    sft: TrainingResult | None
    sft_config: dict
    dpo: TrainingResult | None  # None with best_of_n or an online step.
    policy_config: dict
    online: TrainingResult | None = None  # PPO, RLOO or GRPO's result, when the round ran one.
    round_metrics: dict = field(default_factory=dict)  # What the step adds to the round's metrics.

    @property
    def policy(self) -> TrainingResult:
        """The result that is the new policy: DPO's or the online step's, else the SFT model."""
        return self.dpo or self.online or self.sft


def train_sft_step(training_round, serving, demonstrations, round_settings: RoundSettings) -> SFTStep:
    if not demonstrations:
        return SFTStep(start_path=serving.path, result=None, config={})
    config = SFTConfig(learning_rate=round_settings.sft_learning_rate, epochs=1, batch_size=round_settings.batch_size,
                       max_length=round_settings.max_length, seed=round_settings.seed,
                       device=settings.TRAINING_DEVICE or None)
    result = train_sft(model_path=serving.path, demonstrations=demonstrations, config=config,
                       out_dir=checkpoint_dir(training_round, ModelVersion.Kind.SFT),
                       progress=progress_reporter(training_round.pk, "SFT"))
    return SFTStep(start_path=str(result.checkpoint), result=result, config=config.to_dict())


def train_dpo_step(training_round, serving, sft: SFTStep, pairs, round_settings: RoundSettings) -> TrainedPolicy:
    """DPO from where SFT left off; with best_of_n, the SFT model itself is the new policy."""
    if round_settings.policy_data == "best_of_n":
        # The KL of a best-of-n policy is measured against the policy it was sampled from.
        return TrainedPolicy(sft=sft.result, sft_config=sft.config, dpo=None,
                             policy_config={**sft.config, "reference_path": serving.path})
    if not pairs:
        raise InvalidInput("No usable preference pairs to train the policy on (ties and both-bad are left out).")
    reference_path = _reference_path(serving, sft, round_settings)
    config = DPOConfig(
        beta=round_settings.beta, learning_rate=round_settings.learning_rate,
        epochs=dpo_epochs_for(round_settings, len(pairs)), batch_size=round_settings.batch_size,
        max_length=round_settings.max_length, reference_path=reference_path, lora_rank=round_settings.lora_rank,
        seed=round_settings.seed, device=settings.TRAINING_DEVICE or None,
    )
    result = train_dpo(
        policy_path=sft.start_path, pairs=pairs, config=config,
        out_dir=checkpoint_dir(training_round, ModelVersion.Kind.POLICY),
        cache_dir=Path(settings.MODELS_DIR) / "reference-cache",
        progress=progress_reporter(training_round.pk, "DPO"),
    )
    return TrainedPolicy(sft=sft.result, sft_config=sft.config, dpo=result, policy_config=config.to_dict())




def train_policy_step(training_round, serving, sft: SFTStep, pairs, round_settings: RoundSettings) -> TrainedPolicy:
    """The round's `policy_step` from where SFT left off: DPO on `pairs`, or an online step."""
    if round_settings.policy_step in ONLINE_POLICY_STEPS:
        return train_online_step(training_round, serving, sft, round_settings)
    return train_dpo_step(training_round, serving, sft, pairs, round_settings)


def _reference_path(serving, sft: SFTStep, round_settings: RoundSettings) -> str:
    """The policy step's reference: the base or the serving policy, or the round's SFT model."""
    if sft.result is not None and round_settings.reference_follows_sft:
        return sft.start_path
    return selectors.base_policy(serving).path if round_settings.reference == "base" else serving.path


# The per-step values the round keeps and the dashboard charts; value_loss is PPO's alone.
ONLINE_HISTORY_KEYS = ("step", "reward_mean", "kl", "entropy", "clip_fraction", "value_loss", "reply_length", "eos_rate")


def train_online_step(training_round, serving, sft: SFTStep, round_settings: RoundSettings) -> TrainedPolicy:
    """PPO, RLOO or GRPO from where SFT left off, scored by the round's new reward model, sampling on
    the round's generation prompts and the training pool (never an evaluation prompt)."""
    reward_model = ModelVersion.objects.get(training_round=training_round, kind=ModelVersion.Kind.REWARD)
    prompts = selectors.prompts_for_online_training(
        training_round=training_round, limit=round_settings.online_steps * round_settings.online_prompts_per_step
    )
    if not prompts:
        raise InvalidInput("There are no training prompts for the online policy step to sample on; load or import some.")
    contexts = [[{"role": "user", "content": prompt.text}] for prompt in prompts]
    _online_prompts_save(training_round, contexts)
    common = {
        "learning_rate": round_settings.learning_rate, "steps": round_settings.online_steps,
        "prompts_per_step": round_settings.online_prompts_per_step, "batch_size": round_settings.batch_size,
        "beta": round_settings.kl_coef, "max_new_tokens": round_settings.max_new_tokens,
        # max_length bounds prompt and reply together, as it does for DPO.
        "max_context_tokens": max(1, round_settings.max_length - round_settings.max_new_tokens),
        "reward_max_length": round_settings.max_length, "reference_path": _reference_path(serving, sft, round_settings),
        "seed": round_settings.seed, "device": settings.TRAINING_DEVICE or None,
    }
    step = round_settings.policy_step
    k = round_settings.online_samples_per_prompt
    if step == "ppo":
        config, train = PPOConfig(**common, update_epochs=round_settings.ppo_epochs), train_ppo
    elif step == "rloo":
        config, train = RLOOConfig(**common, samples_per_prompt=k), train_rloo
    else:
        config, train = GRPOConfig(**common, samples_per_prompt=k), train_grpo
    TrainingRound.objects.filter(pk=training_round.pk).update(
        step=f"{step.upper()}: sampling on {len(contexts)} training prompts", progress=0.0
    )
    result = train(policy_path=sft.start_path, prompts=contexts, reward_path=reward_model.path, config=config,
                   out_dir=checkpoint_dir(training_round, ModelVersion.Kind.POLICY),
                   progress=progress_reporter(training_round.pk, step.upper()))
    # GRPO without a KL term reports nan for KL; PostgreSQL's jsonb has no nan, so it is stored as null.
    result = replace(result, metrics=_json_safe(result.metrics))
    history = [{key: entry.get(key) for key in ONLINE_HISTORY_KEYS} for entry in result.metrics["history"]]
    round_metrics = {"policy_step": step, "online_prompts": len(contexts), "online_history": history}
    return TrainedPolicy(sft=sft.result, sft_config=sft.config, dpo=None, online=result,
                         policy_config={"stage": step, **config.to_dict()}, round_metrics=round_metrics)


def _online_prompts_save(training_round, contexts: list[list[dict]]) -> None:
    """Keep the prompts the online step samples on beside the round's checkpoints (TRL's prompt-only
    format), so it can be checked that no evaluation prompt was among them."""
    directory = Path(settings.MODELS_DIR) / f"round-{training_round.number}"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "online-prompts.jsonl").write_text("".join(json.dumps({"prompt": context}) + "\n" for context in contexts))


def _json_safe(value):
    """`value` with every nan or infinite float replaced by None, at any depth."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    return value
