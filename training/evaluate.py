"""Evaluation of a policy on held-out contexts: win rate, KL to the reference, length, EOS rate.

For each context one reply is sampled from the policy and one from the other policy (the baseline,
e.g. the previous round's); the reward model judges each pair of replies. The KL estimate is the
sampled estimator KL(pi || ref) ~ mean over the policy's samples of log pi(y|x) - log ref(y|x),
which is unbiased only when the samples come from pi itself, i.e. with temperature 1 and top_p 1
(the defaults here).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from training.checkpoints import load_causal_lm, load_reward_model
from training.generate import GenerationConfig, generate_replies
from training.packing import score_each_reply, sequence_log_probs
from training.reward import score_replies
from training.runtime import pick_device

Message = dict[str, str]


@dataclass
class EvaluationConfig:
    generation: GenerationConfig = field(
        default_factory=lambda: GenerationConfig(candidates_per_context=1, temperature=1.0, top_p=1.0, max_new_tokens=128)
    )
    max_length: int = 2048  # Longest context+reply scored by the reward model and for the KL estimate.
    batch_size: int = 8  # Sequences per forward pass when scoring.
    device: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class EvaluationReport:
    contexts: int
    win_rate: float  # Share of contexts where the policy's reply out-scores the baseline's; ties count half.
    ties: int
    policy_reward_mean: float
    baseline_reward_mean: float
    kl_to_reference: float | None  # Mean over contexts of log pi(y|x) - log ref(y|x), y ~ pi.
    mean_response_tokens: float
    eos_rate: float  # Share of the policy's replies that ended with EOS rather than at the length cap.

    def to_dict(self) -> dict:
        return asdict(self)


def reply_log_probs(
    model: torch.nn.Module, tokenizer, contexts: list[list[Message]], replies: list[str], *, max_length: int, batch_size: int
) -> torch.Tensor:
    """Summed log-prob of each reply given its context under `model`: (len(replies),) float32."""
    return score_each_reply(model, tokenizer, contexts, replies, lambda m, batch: sequence_log_probs(m, batch)[0],
                            max_length=max_length, batch_size=batch_size)


def evaluate_policy(
    *,
    policy_path: str | Path,
    baseline_path: str | Path,
    reward_path: str | Path,
    contexts: list[list[Message]],
    reference_path: str | Path | None = None,
    config: EvaluationConfig | None = None,
) -> EvaluationReport:
    """Compare the policy with the baseline on `contexts`, judged by the reward model."""
    config = config or EvaluationConfig()
    if not contexts:
        raise ValueError("No contexts to evaluate on.")
    device = pick_device(config.device)
    generation = GenerationConfig(**{**config.generation.to_dict(), "candidates_per_context": 1})

    policy = load_causal_lm(str(policy_path), device=device)
    policy_replies = [replies[0] for replies in generate_replies(policy.model, policy.tokenizer, contexts, generation)]
    policy_texts = [reply.text for reply in policy_replies]
    kl = None
    if reference_path is not None:
        policy_logps = reply_log_probs(
            policy.model, policy.tokenizer, contexts, policy_texts, max_length=config.max_length, batch_size=config.batch_size
        )
        del policy
        reference = load_causal_lm(str(reference_path), device=device)
        reference_logps = reply_log_probs(
            reference.model, reference.tokenizer, contexts, policy_texts, max_length=config.max_length,
            batch_size=config.batch_size,
        )
        del reference
        kl = (policy_logps - reference_logps).mean().item()
    else:
        del policy

    baseline = load_causal_lm(str(baseline_path), device=device)
    baseline_texts = [replies[0].text for replies in generate_replies(baseline.model, baseline.tokenizer, contexts, generation)]
    del baseline

    judge = load_reward_model(str(reward_path), device=device)
    policy_rewards = score_replies(
        judge.model, judge.tokenizer, contexts, policy_texts, max_length=config.max_length, batch_size=config.batch_size
    )
    baseline_rewards = score_replies(
        judge.model, judge.tokenizer, contexts, baseline_texts, max_length=config.max_length, batch_size=config.batch_size
    )
    wins = (policy_rewards > baseline_rewards).sum().item()
    ties = (policy_rewards == baseline_rewards).sum().item()
    return EvaluationReport(
        contexts=len(contexts),
        win_rate=(wins + 0.5 * ties) / len(contexts),
        ties=int(ties),
        policy_reward_mean=policy_rewards.mean().item(),
        baseline_reward_mean=baseline_rewards.mean().item(),
        kl_to_reference=kl,
        mean_response_tokens=sum(reply.token_count for reply in policy_replies) / len(policy_replies),
        eos_rate=sum(reply.finished_with_eos for reply in policy_replies) / len(policy_replies),
    )
