"""Evaluating a round's new policy on the frozen evaluation set: the samples people will judge,
KL on sampled tokens, the reward model's normalised scores, and the guard and warnings read off them.

The round step that calls these (steps.round_evaluate) records the results and creates the
blind head-to-heads in one transaction.
"""

from __future__ import annotations

import random
import statistics
from dataclasses import dataclass

from django.conf import settings

from preference_app.core.comparisons import candidate_create_from_reply, comparison_create
from preference_app.core.models import Comparison, Conversation, TrainingRound, Turn
from preference_app.rounds import selectors
from preference_app.rounds.round_settings import RoundSettings
from training.evaluate import kl_to_reference, reward_scores, sample_policy, win_rate
from training.generate import GeneratedReply, GenerationConfig


@dataclass(frozen=True)
class EvaluationSamples:
    new: list[GeneratedReply]
    serving: list[GeneratedReply]
    new_rewards: list[float]  # Normalised on the base policy's replies (mean 0, sd 1).
    serving_rewards: list[float]
    sampling: dict
    metrics: dict


def measure_on_evaluation_set(training_round, new_policy, reward_model, texts, round_settings) -> EvaluationSamples:
    """Sample the new, serving and base policies once per evaluation prompt as they serve (the
    round's temperature and nucleus): the head-to-heads people judge, their lengths and endings,
    and every reply scored by the round's reward model, normalised on the base's replies. KL is
    measured on a second sample of the new policy at temperature 1 with no nucleus cut, the only
    setting in which the KL estimators are unbiased (on samples of pi itself)."""
    serving = new_policy.parent
    base = selectors.base_policy(new_policy)
    contexts = [[{"role": "user", "content": text}] for text in texts]
    device = settings.TRAINING_DEVICE or None
    seed = round_settings.seed + 1000 * training_round.number
    served = GenerationConfig(candidates_per_context=1, temperature=round_settings.temperature,
                              max_new_tokens=round_settings.eval_max_new_tokens, seed=seed)
    # Each policy gets its own seed: with one seed, two nearly equal policies would write the same
    # reply and people would be asked to compare a text with itself.
    seeded = [GenerationConfig(**{**served.to_dict(), "seed": seed + offset}) for offset in range(3)]
    pure = GenerationConfig(candidates_per_context=1, temperature=1.0, top_p=1.0,
                            max_new_tokens=round_settings.eval_max_new_tokens, seed=seed + 3)

    def step(text: str, progress: float) -> None:
        TrainingRound.objects.filter(pk=training_round.pk).update(step=text, progress=progress)

    step(f"Sampling the new policy on {len(contexts)} evaluation prompts", 0.05)
    new = sample_policy(policy_path=new_policy.path, contexts=contexts, generation=seeded[0], device=device)
    step("KL to the reference on tokens sampled at temperature 1", 0.2)
    kl_samples = sample_policy(policy_path=new_policy.path, contexts=contexts, generation=pure, device=device)
    reference_path = new_policy.config.get("reference_path") or base.path
    kl = kl_to_reference(policy_path=new_policy.path, reference_path=reference_path, contexts=contexts,
                         replies=kl_samples, max_context_tokens=pure.max_context_tokens,
                         batch_size=round_settings.batch_size, device=device)
    step("Sampling the serving policy", 0.45)
    serving_replies = sample_policy(policy_path=serving.path, contexts=contexts, generation=seeded[1], device=device)
    step("Sampling the base policy", 0.6)
    base_replies = sample_policy(policy_path=base.path, contexts=contexts, generation=seeded[2], device=device)
    step("Scoring every reply with the round's reward model", 0.75)
    scores = reward_scores(reward_path=reward_model.path, contexts=contexts * 3,
                           texts=[reply.text for reply in [*new, *serving_replies, *base_replies]],
                           max_length=round_settings.max_length, batch_size=round_settings.batch_size, device=device)
    count = len(contexts)
    base_mean = statistics.fmean(scores[2 * count:])
    base_sd = statistics.pstdev(scores[2 * count:]) if count > 1 else 0.0
    normalised = [(score - base_mean) / max(base_sd, 1e-6) for score in scores]
    new_rewards, serving_rewards = normalised[:count], normalised[count: 2 * count]
    reward_model_win_rate, _ = win_rate(new_rewards, serving_rewards)
    metrics = {
        "evaluation_prompts": count,
        **{f"kl_{name}": value for name, value in kl.estimate.to_dict().items() if name != "samples"},
        "kl_reference_path": str(reference_path),
        "mean_length_new": statistics.fmean(reply.token_count for reply in new),
        "mean_length_serving": statistics.fmean(reply.token_count for reply in serving_replies),
        "eos_rate_new": statistics.fmean(reply.finished_with_eos for reply in new),
        "eos_rate_serving": statistics.fmean(reply.finished_with_eos for reply in serving_replies),
        "truncated_new": sum(not reply.finished_with_eos for reply in new),
        "reward_model_win_rate": reward_model_win_rate,
        "reward_new": statistics.fmean(new_rewards),
        "reward_serving": statistics.fmean(serving_rewards),
        "reward_normalisation": {"base_mean": base_mean, "base_sd": base_sd, "policy": base.name},
        "kl_per_sample": {"k1": kl.k1, "k3": kl.k3},
    }
    return EvaluationSamples(new=new, serving=serving_replies, new_rewards=new_rewards,
                             serving_rewards=serving_rewards, sampling=served.to_dict(), metrics=metrics)


def verdict_comparisons_create(training_round, new_policy, texts, measured: EvaluationSamples, round_settings) -> dict:
    """One blind head-to-head per evaluation prompt, the new policy first or second at random.

    Returns {comparison id: [new reply's reward, serving reply's reward]} for scoring the reward
    model against the people later.
    """
    rng = random.Random(round_settings.seed * 7919 + training_round.number)
    rewards = {}
    for text, new, serving, new_reward, serving_reward in zip(
        texts, measured.new, measured.serving, measured.new_rewards, measured.serving_rewards
    ):
        conversation = Conversation.objects.create(source=Conversation.Source.EVALUATION)
        Turn.objects.create(conversation=conversation, index=0, role=Turn.Role.USER, text=text)
        new_candidate, serving_candidate = (
            candidate_create_from_reply(
                conversation=conversation, context_length=1, reply=reply, model_version=version,
                sampling=measured.sampling,
            )
            for reply, version in ((new, new_policy), (serving, new_policy.parent))
        )
        first, second = (new_candidate, serving_candidate) if rng.random() < 0.5 else (serving_candidate, new_candidate)
        comparison = comparison_create(first, second, source=Comparison.Source.VERDICT,
                                       training_round=training_round, overlap_target=round_settings.overlap_target)
        rewards[str(comparison.pk)] = [new_reward, serving_reward]
    return rewards


def model_warnings(evaluation: dict, round_settings: RoundSettings) -> list[str]:
    """Signs that the policy moved where the reward model is no guide: KL or length ran away."""
    warnings = []
    kl = evaluation.get("kl_k3")
    if kl is not None and kl > round_settings.warn_kl:
        warnings.append(f"KL to the reference is {kl:.2f} nats per reply, above {round_settings.warn_kl:g}.")
    new_length, serving_length = evaluation.get("mean_length_new"), evaluation.get("mean_length_serving")
    if new_length and serving_length:
        ratio = new_length / serving_length
        if ratio > round_settings.warn_length_ratio or ratio < 1 / round_settings.warn_length_ratio:
            warnings.append(f"Mean reply length changed {ratio:.2f}-fold ({serving_length:.0f} to {new_length:.0f} tokens).")
    return warnings


def guard_refusal(evaluation: dict, round_settings: RoundSettings) -> str | None:
    """Why a policy must not go before people at all: it left its reference or stopped ending replies.

    Such a policy has usually learnt to please the reward model at the expense of language, which
    people reject at once; asking them to judge fifty such pairs wastes their time.
    """
    kl = evaluation.get("kl_k3")
    if kl is not None and kl > round_settings.kl_guard:
        return f"Refused by the guard: KL to the reference is {kl:.2f} nats per reply, above kl_guard {round_settings.kl_guard:g}."
    drop = evaluation.get("eos_rate_serving", 0.0) - evaluation.get("eos_rate_new", 0.0)
    if drop > round_settings.eos_drop_guard:
        return (f"Refused by the guard: the share of replies that end fell by {drop:.2f} "
                f"(from {evaluation['eos_rate_serving']:.2f} to {evaluation['eos_rate_new']:.2f}), "
                f"more than eos_drop_guard {round_settings.eos_drop_guard:g}.")
    return None


