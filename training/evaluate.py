"""Evaluation of a policy on held-out contexts: win rate, KL to the reference, length, EOS rate.

The pieces are separate so the web app can run them one at a time and store what each returns:

    sample_policy    one reply per context from a policy, keeping the sampled token ids
    kl_to_reference  KL(pi || ref) estimated on those ids (see `kl_estimate`)
    reward_scores    the reward model's score of each (context, reply text)
    win_rate         how often one policy's reply out-scores another's

`evaluate_policy` composes them for the command line: one reply per context from the policy and
one from the baseline (e.g. the previous round's policy), each pair judged by the reward model.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from training.checkpoints import load_causal_lm, load_reward_model
from training.data import EncodedDemonstration
from training.generate import GeneratedReply, GenerationConfig, encode_contexts, generate_replies
from training.packing import pack_demonstrations, sequence_log_probs
from training.reward import score_replies
from training.runtime import pick_device

Message = dict[str, str]


@dataclass
class EvaluationConfig:
    # Temperature 1 and top_p 1 sample from pi itself, which the KL estimate needs to be unbiased.
    generation: GenerationConfig = field(
        default_factory=lambda: GenerationConfig(candidates_per_context=1, temperature=1.0, top_p=1.0, max_new_tokens=128)
    )
    max_length: int = 2048  # Longest context+reply the reward model scores.
    batch_size: int = 8  # Sequences per forward pass when scoring and computing log-probs.
    device: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class KLEstimate:
    """Sampled estimate of KL(pi || ref) = E_{y ~ pi(.|x)} [log pi(y|x) - log ref(y|x)].

    The estimators are those of John Schulman's note "Approximating KL Divergence" (2020). With the
    per-token ratio r = ref(y_t|x, y_<t) / pi(y_t|x, y_<t):

        k1 = -log r = log pi - log ref    unbiased; a single sample can be negative
        k3 = (r - 1) - log r              unbiased; never negative, and lower variance

    Each reply's estimate is the sum over its tokens (EOS included when it ended with one); the
    figures here are the means over the n sampled replies, with standard error

        stderr = sample standard deviation (n - 1 in the denominator) / sqrt(n)    (0 when n = 1).

    Both are unbiased only when the replies were sampled from pi itself, at temperature 1 and
    top_p 1; a lower temperature or a nucleus cut-off samples from another distribution.
    """

    k1: float
    k1_stderr: float
    k3: float
    k3_stderr: float
    samples: int

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class KLReport:
    """A KL estimate and the per-reply sums it was averaged from, in the order of the replies."""

    estimate: KLEstimate
    k1: list[float]
    k3: list[float]

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class EvaluationReport:
    contexts: int
    win_rate: float  # Share of contexts where the policy's reply out-scores the baseline's; ties count half.
    ties: int
    policy_reward_mean: float
    baseline_reward_mean: float
    # KL(pi || ref) on the policy's replies (see KLEstimate); None when no reference was given.
    kl_k1: float | None
    kl_k1_stderr: float | None
    kl_k3: float | None
    kl_k3_stderr: float | None
    mean_response_tokens: float  # Not counting the EOS token.
    eos_rate: float  # Share of the policy's replies that ended with EOS (end of turn) rather than at the length cap.
    truncated: int  # The policy's replies cut at max_new_tokens.

    def to_dict(self) -> dict:
        return asdict(self)


def _mean_and_stderr(values: torch.Tensor) -> tuple[float, float]:
    """Mean and standard error (sample std / sqrt(n), 0 for one value) of a (n,) tensor."""
    if values.numel() == 1:
        return values.item(), 0.0
    return values.mean().item(), (values.std(correction=1) / math.sqrt(values.numel())).item()


def kl_estimate(
    policy_token_logps: list[torch.Tensor], reference_token_logps: list[torch.Tensor]
) -> tuple[KLEstimate, list[float], list[float]]:
    """k1 and k3 (see KLEstimate) from each reply's per-token log-probs under pi and under ref.

    Each list holds one (tokens,) tensor per reply, the same tokens under both models. Returns the
    estimate and each reply's k1 and k3 (its sums over tokens). Computed in float64.
    """
    if len(policy_token_logps) != len(reference_token_logps):
        raise ValueError("Policy and reference log-probs must cover the same replies.")
    if not policy_token_logps:
        raise ValueError("No replies to estimate the KL divergence on.")
    k1, k3 = [], []
    for policy, reference in zip(policy_token_logps, reference_token_logps):
        if policy.shape != reference.shape:
            raise ValueError(f"A reply has {policy.numel()} policy but {reference.numel()} reference log-probs.")
        log_ratio = reference.double() - policy.double()  # (tokens,) log r
        k1.append((-log_ratio).sum())
        # expm1 keeps r - 1 accurate when r is close to 1, where k3 is a difference of small numbers.
        k3.append((torch.expm1(log_ratio) - log_ratio).sum())
    k1_values, k3_values = torch.stack(k1), torch.stack(k3)  # (n,)
    k1_mean, k1_stderr = _mean_and_stderr(k1_values)
    k3_mean, k3_stderr = _mean_and_stderr(k3_values)
    estimate = KLEstimate(k1=k1_mean, k1_stderr=k1_stderr, k3=k3_mean, k3_stderr=k3_stderr, samples=len(k1))
    return estimate, k1_values.tolist(), k3_values.tolist()


@torch.inference_mode()
def token_log_probs_on_ids(
    model: torch.nn.Module, context_ids: list[list[int]], reply_ids: list[list[int]], *, batch_size: int
) -> list[torch.Tensor]:
    """log model(y_t | context, y_<t) for every token of every reply: one (len(reply),) float32 tensor each.

    The ids are scored as given, never decoded, so the log-probs belong to exactly the tokens that
    were sampled. `batch_size` (context, reply) sequences share one padding-free packed pass.
    """
    if len(context_ids) != len(reply_ids):
        raise ValueError("Every reply needs its context.")
    if any(not context for context in context_ids):
        raise ValueError("A context is empty, so nothing predicts its reply's first token.")
    model.eval()
    device = next(model.parameters()).device
    encoded = [EncodedDemonstration(tuple(context), tuple(reply)) for context, reply in zip(context_ids, reply_ids)]
    log_probs: list[torch.Tensor] = []
    for start in range(0, len(encoded), batch_size):
        chunk = encoded[start : start + batch_size]
        # No reward is read off this batch, so which token counts as padding does not matter.
        batch = pack_demonstrations(chunk, pad_token_id=None).to(device)
        _, token_logps = sequence_log_probs(model, batch)  # (N,) sequence by sequence, in order
        log_probs.extend(token_logps.float().cpu().split([len(item.completion_ids) for item in chunk]))
    return log_probs


def sample_policy(
    *, policy_path: str | Path, contexts: list[list[Message]], generation: GenerationConfig, device: str | None = None
) -> list[GeneratedReply]:
    """One reply per context from the policy at `policy_path` (the config's K is ignored)."""
    loaded = load_causal_lm(str(policy_path), device=pick_device(device))
    single = GenerationConfig(**{**generation.to_dict(), "candidates_per_context": 1})
    return [replies[0] for replies in generate_replies(loaded.model, loaded.tokenizer, contexts, single)]


def kl_to_reference(
    *,
    policy_path: str | Path,
    reference_path: str | Path,
    contexts: list[list[Message]],
    replies: list[GeneratedReply],
    max_context_tokens: int,
    batch_size: int,
    device: str | None = None,
) -> KLReport:
    """KL(pi || ref) on replies sampled from the policy, computed on their sampled token ids.

    `max_context_tokens` must be the one the replies were generated with, so each context is
    encoded to the very ids the replies continue. One model is in memory at a time.
    """
    if len(contexts) != len(replies):
        raise ValueError("Every reply needs its context.")
    if any(not reply.token_ids for reply in replies):
        raise ValueError("A reply has no sampled token ids; KL is estimated on replies from generate_replies.")
    resolved = pick_device(device)
    reply_ids = [list(reply.token_ids) for reply in replies]

    policy = load_causal_lm(str(policy_path), device=resolved)
    tokenizer = policy.tokenizer
    context_ids = encode_contexts(tokenizer, contexts, max_context_tokens)
    policy_logps = token_log_probs_on_ids(policy.model, context_ids, reply_ids, batch_size=batch_size)
    del policy

    reference = load_causal_lm(str(reference_path), device=resolved)
    if reference.tokenizer.get_vocab() != tokenizer.get_vocab():
        raise ValueError("The reference's tokenizer differs from the policy's, so the same ids mean other tokens.")
    reference_logps = token_log_probs_on_ids(reference.model, context_ids, reply_ids, batch_size=batch_size)
    del reference

    estimate, k1, k3 = kl_estimate(policy_logps, reference_logps)
    return KLReport(estimate=estimate, k1=k1, k3=k3)


def reward_scores(
    *,
    reward_path: str | Path,
    contexts: list[list[Message]],
    texts: list[str],
    max_length: int,
    batch_size: int,
    device: str | None = None,
) -> list[float]:
    """The reward model's score of each (context, reply text), in order."""
    judge = load_reward_model(str(reward_path), device=pick_device(device))
    scores = score_replies(judge.model, judge.tokenizer, contexts, texts, max_length=max_length, batch_size=batch_size)
    return scores.tolist()


def win_rate(policy_rewards: list[float], baseline_rewards: list[float]) -> tuple[float, int]:
    """Share of contexts where the policy's reward beats the baseline's, a tie counting half; and the ties.

        win_rate = (wins + ties / 2) / contexts
    """
    if len(policy_rewards) != len(baseline_rewards) or not policy_rewards:
        raise ValueError("Win rate needs one policy and one baseline reward per context.")
    wins = sum(policy > baseline for policy, baseline in zip(policy_rewards, baseline_rewards))
    ties = sum(policy == baseline for policy, baseline in zip(policy_rewards, baseline_rewards))
    return (wins + 0.5 * ties) / len(policy_rewards), ties


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
    policy_replies = sample_policy(
        policy_path=policy_path, contexts=contexts, generation=config.generation, device=config.device
    )
    kl = None
    if reference_path is not None:
        kl = kl_to_reference(
            policy_path=policy_path, reference_path=reference_path, contexts=contexts, replies=policy_replies,
            max_context_tokens=config.generation.max_context_tokens, batch_size=config.batch_size,
            device=config.device,
        ).estimate
    baseline_replies = sample_policy(
        policy_path=baseline_path, contexts=contexts, generation=config.generation, device=config.device
    )
    # Both policies' replies go through one call, so the reward model is loaded once.
    rewards = reward_scores(
        reward_path=reward_path, contexts=contexts + contexts,
        texts=[reply.text for reply in policy_replies + baseline_replies],
        max_length=config.max_length, batch_size=config.batch_size, device=config.device,
    )
    policy_rewards, baseline_rewards = rewards[: len(contexts)], rewards[len(contexts) :]
    rate, ties = win_rate(policy_rewards, baseline_rewards)
    finished = sum(reply.finished_with_eos for reply in policy_replies)
    return EvaluationReport(
        contexts=len(contexts),
        win_rate=rate,
        ties=ties,
        policy_reward_mean=sum(policy_rewards) / len(policy_rewards),
        baseline_reward_mean=sum(baseline_rewards) / len(baseline_rewards),
        kl_k1=None if kl is None else kl.k1,
        kl_k1_stderr=None if kl is None else kl.k1_stderr,
        kl_k3=None if kl is None else kl.k3,
        kl_k3_stderr=None if kl is None else kl.k3_stderr,
        mean_response_tokens=sum(reply.token_count for reply in policy_replies) / len(policy_replies),
        eos_rate=finished / len(policy_replies),
        truncated=len(policy_replies) - finished,
    )
