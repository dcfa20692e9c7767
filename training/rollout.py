"""Rollouts shared by the online stages (PPO, RLOO, GRPO): sample, score, and take log-probs on the sampled ids.

A rollout samples k replies per prompt with the policy's own batched, KV-cached sampling
(training.generate), keeping the sampled token ids; every log-prob afterwards is taken on exactly
those ids, in padding-free packed passes (training.packing), so log pi, log pi_old and log ref
belong to the same tokens. Sampling is at temperature 1 and top_p 1 by default: the replies must be
drawn from pi itself for the policy-gradient and KL estimates to be unbiased (Huang et al. 2024,
detail "temperature").

Replies are scored through a `Scorer`: the reward model on the reply's text (`RewardModelScorer`),
or any function with the same signature (a scripted reward in tests).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from copy import deepcopy
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import torch

from training.checkpoints import load_causal_lm, load_reward_model
from training.data import EncodedDemonstration, EncodingReport
from training.distributed import gather_objects
from training.generate import GeneratedReply, GenerationConfig, encode_contexts, generate_replies
from training.losses import token_log_probs
from training.packing import PackedBatch, check_supported, pack_demonstrations, packed_hidden_states, unwrap
from training.reward import score_replies

Message = dict[str, str]


@dataclass
class OnlineConfig:
    """Settings every online stage shares; PPOConfig, RLOOConfig and GRPOConfig add their own."""

    learning_rate: float = 1e-6  # AdamW learning rate, constant (Huang et al. 2024 anneal it; optional there).
    steps: int = 100  # Rollout-then-update iterations.
    prompts_per_step: int = 8  # Prompts sampled each step; the rollout holds prompts_per_step * k replies.
    samples_per_prompt: int = 1  # k: replies sampled per prompt.
    update_epochs: int = 1  # Passes over each rollout (PPO's epochs, TRL's num_iterations).
    mini_batches: int = 1  # Optimiser steps per pass over a rollout.
    batch_size: int = 8  # Replies per forward pass; a minibatch's passes are accumulated.
    beta: float = 0.05  # Strength of the KL penalty toward the reference.
    max_new_tokens: int = 64  # Reply length cap; a reply cut here did not end with EOS.
    temperature: float = 1.0  # 1 and top_p 1 sample from pi itself, which the estimators assume.
    top_p: float = 1.0
    max_context_tokens: int = 1024  # Longer prompts keep their most recent tokens.
    generation_batch_size: int = 32  # Rows per sampling pass.
    missing_eos_penalty: float | None = None  # Subtracted from the score of a reply cut before EOS.
    reference_path: str | None = None  # None: a frozen copy of the policy's starting weights.
    reward_max_length: int = 2048  # Longest context+reply the reward model scores.
    reward_batch_size: int = 16  # Replies per reward-model pass.
    weight_decay: float = 0.0
    adam_epsilon: float = 1e-5  # Huang et al. 2024, detail "Adam epsilon": 1e-5 rather than torch's 1e-8.
    max_grad_norm: float = 1.0  # Gradient norm clip; 0 disables clipping.
    seed: int = 0  # Seeds sampling (seed + step), prompt order and new heads.
    device: str | None = None  # None picks CUDA when available.
    gradient_checkpointing: bool = False  # Recompute activations in backward: less memory, slower.
    logits_chunk_size: int = 1024  # Tokens per (chunk, vocab) block of the log-softmax.

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def generation(self, step: int, *, rank: int = 0) -> GenerationConfig:
        """Sampling settings of one step; each process (rank) of a run draws from its own seed."""
        return GenerationConfig(
            candidates_per_context=self.samples_per_prompt, max_new_tokens=self.max_new_tokens,
            temperature=self.temperature, top_p=self.top_p, seed=self.seed + step + 1_000_003 * rank,
            batch_size=self.generation_batch_size, max_context_tokens=self.max_context_tokens,
        )


def prompt_batches(prompts: list[list[Message]], *, per_step: int, steps: int, seed: int) -> Iterator[list[list[Message]]]:
    """`steps` batches of `per_step` prompts: passes over the prompts, each in a fresh seeded order."""
    if not prompts:
        raise ValueError("No prompts to sample replies for.")
    order: list[int] = []
    passes = 0
    for _ in range(steps):
        while len(order) < per_step:
            fresh = list(range(len(prompts)))
            random.Random(seed * 1_000_003 + passes).shuffle(fresh)
            order.extend(fresh)
            passes += 1
        yield [prompts[index] for index in order[:per_step]]
        order = order[per_step:]


def minibatch_indices(size: int, *, mini_batches: int, generator: torch.Generator) -> list[torch.Tensor]:
    """A seeded shuffle of range(size) cut into `mini_batches` nearly equal minibatches."""
    return [part for part in torch.randperm(size, generator=generator).chunk(mini_batches) if part.numel()]


def make_optimizer(parameters: list[torch.nn.Parameter], config: OnlineConfig) -> torch.optim.Optimizer:
    fused = all(parameter.device.type in ("cpu", "cuda") for parameter in parameters)
    return torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=config.weight_decay,
                             eps=config.adam_epsilon, fused=fused)


def optimizer_step(optimizer: torch.optim.Optimizer, parameters: list[torch.nn.Parameter], config: OnlineConfig) -> None:
    if config.max_grad_norm:
        torch.nn.utils.clip_grad_norm_(parameters, config.max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


class Scorer(Protocol):
    def __call__(self, contexts: list[list[Message]], replies: list[GeneratedReply]) -> torch.Tensor:
        """One float32 score per (context, reply): (len(replies),)."""


class RewardModelScorer:
    """Scores replies with a sequence-classification reward model, on their text as annotators saw it.

    The text goes through the chat template again, as when the reward model was trained on judged
    pairs, so the score is read at the same place it was trained at (training.reward).
    """

    def __init__(self, model: torch.nn.Module, tokenizer, *, max_length: int, batch_size: int):
        self.model, self.tokenizer = model, tokenizer
        self.max_length, self.batch_size = max_length, batch_size

    def __call__(self, contexts: list[list[Message]], replies: list[GeneratedReply]) -> torch.Tensor:
        return score_replies(self.model, self.tokenizer, contexts, [reply.text for reply in replies],
                             max_length=self.max_length, batch_size=self.batch_size)


@dataclass
class Rollout:
    """B sampled replies (each prompt's k replies adjacent) and what was measured on them at sampling time."""

    contexts: list[list[Message]]  # (B,) the context of each reply
    prompt_ids: list[list[int]]  # (B,) the ids each reply continues
    reply_ids: list[list[int]]  # (B,) sampled ids, ending with EOS when the reply ended
    finished: torch.Tensor  # (B,) bool, True when the reply ended with EOS
    scores: torch.Tensor  # (B,) float32 reward-model scores, before any penalty
    mask: torch.Tensor  # (B, T) 1.0 on reply tokens
    old_logps: torch.Tensor  # (B, T) log pi_old of the sampled ids
    reference_logps: torch.Tensor | None  # (B, T) log ref of the sampled ids
    entropy: float  # mean per-token entropy of pi_old over the reply tokens

    @property
    def lengths(self) -> torch.Tensor:
        return self.mask.sum(1)  # (B,)


def to_padded(flat: torch.Tensor, lengths: list[int]) -> torch.Tensor:
    """Split a (N,) per-token tensor, sequence after sequence, into a right-padded (B, max(lengths)) one."""
    return torch.nn.utils.rnn.pad_sequence(list(flat.split(lengths)), batch_first=True)


def _rows_of(padded: torch.Tensor, lengths: list[int]) -> torch.Tensor:
    """The inverse of to_padded: each row's first lengths[i] entries, concatenated, (sum(lengths),)."""
    return torch.cat([row[:length] for row, length in zip(padded, lengths)])


def merge_padded(parts: list[torch.Tensor], lengths: list[list[int]]) -> torch.Tensor:
    """Right-padded (B_i, T_i) per-token tensors stacked into one (sum B_i, max T_i), given each row's length."""
    flat = torch.cat([_rows_of(part, part_lengths) for part, part_lengths in zip(parts, lengths)])
    return to_padded(flat, [length for part_lengths in lengths for length in part_lengths])


def merge_rollouts(parts: list[Rollout]) -> Rollout:
    """Rollouts that several processes sampled for consecutive shards of a step's prompts, as one, in order."""
    if len(parts) == 1:
        return parts[0]
    lengths = [[int(length) for length in part.lengths.tolist()] for part in parts]
    tokens = [sum(part_lengths) for part_lengths in lengths]
    has_reference = parts[0].reference_logps is not None
    return Rollout(
        contexts=[context for part in parts for context in part.contexts],
        prompt_ids=[ids for part in parts for ids in part.prompt_ids],
        reply_ids=[ids for part in parts for ids in part.reply_ids],
        finished=torch.cat([part.finished for part in parts]),
        scores=torch.cat([part.scores for part in parts]),
        mask=merge_padded([part.mask for part in parts], lengths),
        old_logps=merge_padded([part.old_logps for part in parts], lengths),
        reference_logps=merge_padded([part.reference_logps for part in parts], lengths) if has_reference else None,
        entropy=sum(part.entropy * count for part, count in zip(parts, tokens)) / max(1, sum(tokens)),
    )


def gather_rollout(rollout: Rollout, values: torch.Tensor | None = None) -> tuple[Rollout, torch.Tensor | None]:
    """Every process's rollout (and per-token critic values) merged in rank order; the same on every rank.

    Sampling, scoring and the reference's log-probs are the costly part and run on each process's
    shard of the prompts; the merged rollout is small (ids and per-token floats) and lets every
    rank compute whole-batch statistics (advantage whitening, group baselines) exactly as one
    process would.
    """
    parts = gather_objects((rollout, values))
    merged = merge_rollouts([part for part, _ in parts])
    if values is None:
        return merged, None
    lengths = [[int(length) for length in part.lengths.tolist()] for part, _ in parts]
    return merged, merge_padded([part_values for _, part_values in parts], lengths)


def pack_replies(prompt_ids: list[list[int]], reply_ids: list[list[int]]) -> PackedBatch:
    """One padding-free row of (prompt, reply) sequences whose scored tokens are the reply's ids."""
    encoded = [EncodedDemonstration(tuple(prompt), tuple(reply)) for prompt, reply in zip(prompt_ids, reply_ids)]
    # Nothing is read at a sequence's last token here, so which id counts as padding does not matter.
    return pack_demonstrations(encoded, pad_token_id=None)


def reply_log_probs(
    model: torch.nn.Module, batch: PackedBatch, *, chunk_size: int = 1024, with_entropy: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log model(y_t | x, y_<t) of every reply token, (N,) float32, and optionally each position's entropy.

    The entropy -sum_v p(v) log p(v), (N,), is a metric: it is computed without gradient, in
    (chunk, V) blocks of the same hidden states, so it costs no second pass of the backbone.
    """
    inner = unwrap(model)
    check_supported(inner)
    hidden = packed_hidden_states(model, batch).index_select(0, batch.target_index)  # (N, H)
    head = inner.get_output_embeddings()
    logps = token_log_probs(hidden, head.weight, batch.target_ids, bias=head.bias, chunk_size=chunk_size)  # (N,)
    if not with_entropy:
        return logps, None
    entropies = []
    with torch.no_grad():
        for start in range(0, hidden.shape[0], chunk_size):
            logits = head(hidden[start : start + chunk_size]).float()  # (chunk, V)
            log_p = torch.log_softmax(logits, dim=-1)
            entropies.append(-(log_p.exp() * log_p).sum(-1))
    return logps, torch.cat(entropies) if entropies else logps.new_zeros(0)


def reply_values(critic: torch.nn.Module, batch: PackedBatch) -> torch.Tensor:
    """V(x, y_<t) for every reply token t: the critic's scalar head on the state that predicts y_t, (N,)."""
    inner = unwrap(critic)
    hidden = packed_hidden_states(critic, batch)  # (L, H)
    return inner.score(hidden.index_select(0, batch.target_index)).squeeze(-1).float()  # (N,)


def context_report(tokenizer, contexts: list[list[Message]], max_context_tokens: int) -> EncodingReport:
    """How many prompts were cut to their last `max_context_tokens` tokens before sampling."""
    full = encode_contexts(tokenizer, contexts, max_context_tokens=10**9)
    truncated = sum(len(ids) > max_context_tokens for ids in full)
    return EncodingReport(total=len(contexts), kept=len(contexts), truncated=truncated)


@torch.no_grad()
def collect_rollout(
    *,
    policy: torch.nn.Module,
    reference: torch.nn.Module | None,
    tokenizer,
    contexts: list[list[Message]],
    generation: GenerationConfig,
    scorer: Scorer,
    batch_size: int,
    chunk_size: int = 1024,
) -> Rollout:
    """Sample `generation.candidates_per_context` replies per context, score them, and take log-probs.

    `batch_size` replies share one packed forward pass when computing log-probs.
    """
    policy.eval()
    sampled = generate_replies(policy, tokenizer, contexts, generation)
    prompts = encode_contexts(tokenizer, contexts, generation.max_context_tokens)
    flat_contexts, prompt_ids, reply_ids, replies = [], [], [], []
    for context, prompt, group in zip(contexts, prompts, sampled):
        for reply in group:
            flat_contexts.append(context)
            prompt_ids.append(prompt)
            reply_ids.append(list(reply.token_ids))
            replies.append(reply)
    lengths = [len(ids) for ids in reply_ids]
    device = next(policy.parameters()).device
    policy_parts, reference_parts, entropy_parts = [], [], []
    for start in range(0, len(reply_ids), batch_size):
        batch = pack_replies(prompt_ids[start : start + batch_size], reply_ids[start : start + batch_size]).to(device)
        logps, entropy = reply_log_probs(policy, batch, chunk_size=chunk_size, with_entropy=True)
        policy_parts.append(logps)
        entropy_parts.append(entropy)
        if reference is not None:
            reference_parts.append(reply_log_probs(reference, batch, chunk_size=chunk_size)[0])
    entropies = torch.cat(entropy_parts)
    return Rollout(
        contexts=flat_contexts,
        prompt_ids=prompt_ids,
        reply_ids=reply_ids,
        finished=torch.tensor([reply.finished_with_eos for reply in replies]),
        scores=scorer(flat_contexts, replies).float().cpu(),
        mask=to_padded(torch.ones(sum(lengths)), lengths),
        old_logps=to_padded(torch.cat(policy_parts).cpu(), lengths),
        reference_logps=to_padded(torch.cat(reference_parts).cpu(), lengths) if reference is not None else None,
        entropy=entropies.mean().item(),
    )


def penalized_scores(rollout: Rollout, penalty: float | None) -> torch.Tensor:
    """The scores with `penalty` subtracted from replies cut before EOS (Huang et al. 2024, detail
    "EOS trick"; TRL's missing_eos_penalty): without it a policy can learn that rambling to the
    length cap is as good as ending its turn. (B,)"""
    if penalty is None:
        return rollout.scores
    return rollout.scores - penalty * (~rollout.finished).float()


@dataclass
class OnlineModels:
    policy: torch.nn.Module
    tokenizer: Any
    reference: torch.nn.Module | None  # None when no KL term is needed
    scorer: Scorer
    reference_name: str


def load_online_models(
    *, policy_path: str, reward_path: str | None, scorer: Scorer | None, config: OnlineConfig,
    device: torch.device, need_reference: bool,
) -> OnlineModels:
    """The policy, a frozen reference, and the scorer (the reward model at `reward_path` unless one is given)."""
    loaded = load_causal_lm(str(policy_path), device=device)
    policy, tokenizer = loaded.model, loaded.tokenizer
    reference = None
    reference_name = config.reference_path or str(policy_path)
    if need_reference:
        reference = (load_causal_lm(config.reference_path, device=device).model if config.reference_path
                     else deepcopy(policy))
        reference.eval().requires_grad_(False)
    if scorer is None:
        if reward_path is None:
            raise ValueError("Give a reward model path or a scorer.")
        judge = load_reward_model(str(reward_path), device=device)
        judge.model.eval().requires_grad_(False)
        scorer = RewardModelScorer(judge.model, judge.tokenizer, max_length=config.reward_max_length,
                                   batch_size=config.reward_batch_size)
    return OnlineModels(policy, tokenizer, reference, scorer, reference_name)
