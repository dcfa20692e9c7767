"""The policy step's parts: where checkpoints go, progress reports, on-policy replies labelled by the
round's reward model, and SFT then DPO (or SFT alone for best-of-n).

services.round_train_policy chooses among them by the round's `policy_data` and registers the results.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from preference_app.core.model_store import serving_model
from preference_app.core.models import ModelVersion, TrainingRound
from preference_app.core.services import InvalidInput
from preference_app.rounds import selectors
from preference_app.rounds.round_settings import RoundSettings, dpo_epochs_for
from training.data import pair_to_trl_record
from training.dpo import DPOConfig, train_dpo
from training.evaluate import reward_scores
from training.generate import GenerationConfig, generate_replies
from training.labelling import Labelled, label_with_rewards
from training.optim import TrainingResult
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


def label_on_policy_replies(training_round, policy_path: str, round_settings: RoundSettings) -> Labelled:
    """Sample n replies per training-pool prompt from the policy at `policy_path` (batched) and let
    the round's new reward model rank them. Evaluation prompts are never among them."""
    prompts = selectors.prompts_for_generation(limit=round_settings.labelled_prompts)
    if not prompts:
        raise InvalidInput("There are no training prompts to sample on-policy replies for; load or import some.")
    reward_model = ModelVersion.objects.get(training_round=training_round, kind=ModelVersion.Kind.REWARD)
    contexts = [[{"role": "user", "content": prompt.text}] for prompt in prompts]
    n = round_settings.labelled_candidates
    TrainingRound.objects.filter(pk=training_round.pk).update(
        step=f"Sampling {len(contexts)} prompts x {n} on-policy replies for the reward model to label", progress=0.0
    )
    sampling = GenerationConfig(candidates_per_context=n, max_new_tokens=round_settings.max_new_tokens,
                                temperature=round_settings.temperature, seed=round_settings.seed + 104729 * training_round.number)
    loaded = serving_model(policy_path)
    texts = [[reply.text for reply in replies] for replies in generate_replies(loaded.model, loaded.tokenizer, contexts, sampling)]
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
    dpo: TrainingResult | None  # None with best_of_n: the SFT model is the policy.
    policy_config: dict


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
    reference_path = selectors.base_policy(serving).path if round_settings.reference == "base" else serving.path
    if sft.result is not None and round_settings.reference_follows_sft:
        reference_path = sft.start_path
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


