"""Padding-free forward passes over preference pairs, with the shared prompt computed once.

A batch of pairs becomes one row of tokens and no padding. For each pair the row holds

    [shared prefix][rest of chosen][rest of rejected]

where the shared prefix is the longest token prefix the two full sequences have in common (at
least the prompt). Under causal attention a token's hidden state depends only on the tokens before
it, so the prefix's hidden states are the same for both sequences and are computed once: the chosen
tokens attend to the prefix and to themselves, the rejected tokens to the prefix and to themselves,
never to each other, and their position ids continue from the prefix. The result equals two
separate padded forward passes (up to float rounding), at the cost of the tokens that exist.

The attention is a function registered with transformers' `AttentionInterface` and switched on
for the duration of a forward pass (`packed_attention`); it runs one causal SDPA call per
(prefix + chosen) span and one per rejected span. Only the positions that are scored leave the
backbone: the completion tokens' predecessors for DPO and SFT, the last non-pad token for rewards.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import AttentionInterface, PreTrainedModel

from training.data import Demonstration, EncodedDemonstration, EncodedPair, common_prefix_length, encode_demonstrations
from training.losses import token_log_probs

ATTENTION_NAME = "training_packed_pairs"


@dataclass(frozen=True)
class Span:
    """One packed pair: rows [start, start+shared+first) then [.., +second) of the packed row."""

    start: int
    shared: int  # Tokens of the shared prefix.
    first: int  # Tokens of the chosen sequence after the prefix (the whole demonstration for SFT).
    second: int  # Tokens of the rejected sequence after the prefix (0 for SFT).


@dataclass
class PackedBatch:
    """A padding-free batch of B pairs (or B demonstrations) in one row of L tokens."""

    input_ids: torch.Tensor  # (1, L)
    position_ids: torch.Tensor  # (1, L)
    spans: tuple[Span, ...]
    num_sequences: int  # 2B for pairs (chosen 0..B-1, rejected B..2B-1), B for demonstrations.
    target_index: torch.Tensor  # (N,) packed index of the hidden state that predicts each scored token
    target_ids: torch.Tensor  # (N,) the scored (completion) tokens
    target_sequence: torch.Tensor  # (N,) which sequence each scored token belongs to
    score_index: torch.Tensor  # (num_sequences,) packed index of each sequence's last non-pad token
    margins: torch.Tensor  # (B,) judgment strengths (zeros for demonstrations)

    @property
    def tokens(self) -> int:
        return self.input_ids.shape[1]

    def to(self, device: torch.device | str) -> PackedBatch:
        moved = {
            name: value.to(device) if isinstance(value, torch.Tensor) else value
            for name, value in self.__dict__.items()
        }
        return PackedBatch(**moved)


def _last_non_pad(ids: tuple[int, ...], pad_token_id: int | None) -> int:
    """The position transformers' sequence-classification models read the score at."""
    for position in range(len(ids) - 1, -1, -1):
        if ids[position] != pad_token_id:
            return position
    return 0


def pack_pairs(pairs: list[EncodedPair], *, pad_token_id: int | None) -> PackedBatch:
    """Pack pairs into one padding-free row with each pair's shared prefix stored once."""
    ids: list[int] = []
    positions: list[int] = []
    spans = []
    batch = len(pairs)
    target_index: list[int] = []
    target_ids: list[int] = []
    target_sequence: list[int] = []
    score_index = [0] * (2 * batch)
    for number, pair in enumerate(pairs):
        chosen, rejected = pair.chosen_sequence, pair.rejected_sequence
        shared = common_prefix_length(chosen, rejected)
        start = len(ids)
        second_start = start + len(chosen)
        ids.extend(chosen)
        ids.extend(rejected[shared:])
        positions.extend(range(len(chosen)))
        positions.extend(range(shared, len(rejected)))
        spans.append(Span(start, shared, len(chosen) - shared, len(rejected) - shared))

        # Where position p of each sequence sits in the packed row.
        chosen_at = list(range(start, start + len(chosen)))
        rejected_at = chosen_at[:shared] + list(range(second_start, second_start + len(rejected) - shared))
        prompt_length = len(pair.prompt_ids)
        for sequence, tokens, locate in ((number, chosen, chosen_at), (batch + number, rejected, rejected_at)):
            for position in range(max(prompt_length, 1), len(tokens)):  # Token 0 has no predictor.
                target_index.append(locate[position - 1])
                target_ids.append(tokens[position])
                target_sequence.append(sequence)
            score_index[sequence] = locate[_last_non_pad(tokens, pad_token_id)]
    return PackedBatch(
        input_ids=torch.tensor([ids], dtype=torch.long),
        position_ids=torch.tensor([positions], dtype=torch.long),
        spans=tuple(spans),
        num_sequences=2 * batch,
        target_index=torch.tensor(target_index, dtype=torch.long),
        target_ids=torch.tensor(target_ids, dtype=torch.long),
        target_sequence=torch.tensor(target_sequence, dtype=torch.long),
        score_index=torch.tensor(score_index, dtype=torch.long),
        margins=torch.tensor([pair.margin for pair in pairs], dtype=torch.float32),
    )


def pack_demonstrations(demonstrations: list[EncodedDemonstration], *, pad_token_id: int | None) -> PackedBatch:
    """Pack demonstrations into one padding-free row; completion tokens are the scored targets."""
    ids: list[int] = []
    positions: list[int] = []
    spans = []
    target_index: list[int] = []
    target_ids: list[int] = []
    target_sequence: list[int] = []
    score_index = []
    for number, demonstration in enumerate(demonstrations):
        tokens = demonstration.prompt_ids + demonstration.completion_ids
        start = len(ids)
        ids.extend(tokens)
        positions.extend(range(len(tokens)))
        spans.append(Span(start, 0, len(tokens), 0))
        for position in range(max(len(demonstration.prompt_ids), 1), len(tokens)):
            target_index.append(start + position - 1)
            target_ids.append(tokens[position])
            target_sequence.append(number)
        score_index.append(start + _last_non_pad(tokens, pad_token_id))
    return PackedBatch(
        input_ids=torch.tensor([ids], dtype=torch.long),
        position_ids=torch.tensor([positions], dtype=torch.long),
        spans=tuple(spans),
        num_sequences=len(demonstrations),
        target_index=torch.tensor(target_index, dtype=torch.long),
        target_ids=torch.tensor(target_ids, dtype=torch.long),
        target_sequence=torch.tensor(target_sequence, dtype=torch.long),
        score_index=torch.tensor(score_index, dtype=torch.long),
        margins=torch.zeros(len(demonstrations)),
    )


def _packed_pairs_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Attention over a packed row: causal within (prefix + chosen); rejected sees prefix + itself.

    query: (1, heads, L, D); key, value: (1, kv_heads, L, D). Returns (1, L, heads, D).

    The row is cut with `torch.split` (whose backward is one concatenation), not with one slice per
    span, whose backward would allocate and fill a full-length zero gradient for every slice.
    """
    spans: tuple[Span, ...] = kwargs["packed_spans"]
    masks: list[torch.Tensor | None] = kwargs["packed_masks"]
    groups = query.shape[1] // key.shape[1]
    if groups > 1:  # Grouped-query attention: each key/value head serves `groups` query heads.
        key = key.repeat_interleave(groups, dim=1)  # (1, heads, L, D)
        value = value.repeat_interleave(groups, dim=1)
    dropout = dropout if module.training else 0.0
    sizes = [size for span in spans for size in (span.shared + span.first, span.second)]
    query_parts, key_parts, value_parts = (torch.split(tensor, sizes, dim=2) for tensor in (query, key, value))
    pieces = []
    for number, span in enumerate(spans):
        first_query, second_query = query_parts[2 * number : 2 * number + 2]
        first_key, second_key = key_parts[2 * number : 2 * number + 2]
        first_value, second_value = value_parts[2 * number : 2 * number + 2]
        pieces.append(
            F.scaled_dot_product_attention(
                first_query, first_key, first_value, is_causal=True, dropout_p=dropout, scale=scaling
            )
        )
        if span.second:
            # Each rejected token sees the whole prefix and the rejected tokens up to itself.
            pieces.append(
                F.scaled_dot_product_attention(
                    second_query,
                    torch.cat([first_key[:, :, : span.shared], second_key], dim=2),
                    torch.cat([first_value[:, :, : span.shared], second_value], dim=2),
                    attn_mask=masks[number],
                    dropout_p=dropout,
                    scale=scaling,
                )
            )
    output = torch.cat(pieces, dim=2)  # (1, heads, L, D)
    return output.transpose(1, 2).contiguous(), None


def _second_masks(spans: tuple[Span, ...], device: torch.device) -> list[torch.Tensor | None]:
    """Per span, the (second, shared + second) mask of what each rejected token may attend to."""
    masks = []
    for span in spans:
        if not span.second:
            masks.append(None)
            continue
        allowed = torch.ones(span.second, span.shared + span.second, dtype=torch.bool, device=device)
        masks.append(allowed.tril(diagonal=span.shared))
    return masks


AttentionInterface.register(ATTENTION_NAME, _packed_pairs_attention)


def unwrap(model: torch.nn.Module) -> PreTrainedModel:
    """The transformers model inside a peft wrapper (LoRA layers stay injected), or the model."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def check_supported(model: PreTrainedModel) -> None:
    """Refuse models whose logits are scaled after the LM head: the chunked log-softmax does not apply it."""
    config = model.config.get_text_config()
    for name in ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier"):
        if getattr(config, name, None) not in (None, 1.0):
            raise NotImplementedError(f"{type(model).__name__} scales its logits ({name}); not supported here.")


@contextmanager
def packed_attention(model: torch.nn.Module):
    """Switch `model` to the packed-pairs attention for the duration of the block."""
    config = unwrap(model).config
    previous = config._attn_implementation
    config._attn_implementation = ATTENTION_NAME
    try:
        yield
    finally:
        config._attn_implementation = previous


def packed_hidden_states(model: torch.nn.Module, batch: PackedBatch) -> torch.Tensor:
    """Run the model's backbone over a packed batch; returns (L, H) last hidden states."""
    inner = unwrap(model)
    return backbone_hidden_states(getattr(inner, inner.base_model_prefix), batch)


def backbone_hidden_states(backbone: torch.nn.Module, batch: PackedBatch) -> torch.Tensor:
    """Run a bare transformer (no LM or score head) over a packed batch: (L, H) last hidden states."""
    with packed_attention(backbone):
        output = backbone(
            input_ids=batch.input_ids,
            position_ids=batch.position_ids,
            packed_spans=batch.spans,
            packed_masks=_second_masks(batch.spans, batch.input_ids.device),
            use_cache=False,
        )
    return output.last_hidden_state[0]  # (L, H)


def sequence_log_probs(
    model: torch.nn.Module, batch: PackedBatch, *, chunk_size: int = 1024
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed completion log-probs of each sequence, and each scored token's log-prob.

    Returns (num_sequences,) sums and (N,) token log-probs, both float32.
    """
    inner = unwrap(model)
    check_supported(inner)
    hidden = packed_hidden_states(model, batch)  # (L, H)
    head = inner.get_output_embeddings()
    token_logps = token_log_probs(
        hidden.index_select(0, batch.target_index), head.weight, batch.target_ids, bias=head.bias,
        chunk_size=chunk_size,
    )  # (N,)
    sums = torch.zeros(batch.num_sequences, dtype=token_logps.dtype, device=token_logps.device)
    sums = sums.index_add(0, batch.target_sequence, token_logps)  # (num_sequences,)
    return sums, token_logps


def sequence_rewards(model: torch.nn.Module, batch: PackedBatch) -> torch.Tensor:
    """Scalar reward of each sequence from a one-output sequence-classification model, or from a
    model that scores packed batches itself (training.reward_probe): (num_sequences,)."""
    inner = unwrap(model)
    if hasattr(inner, "packed_rewards"):
        return inner.packed_rewards(batch)
    hidden = packed_hidden_states(model, batch)  # (L, H)
    scores = inner.score(hidden.index_select(0, batch.score_index))  # (num_sequences, 1)
    return scores.squeeze(-1).float()


@torch.inference_mode()
def score_each_reply(
    model: PreTrainedModel,
    tokenizer,
    contexts: list[list[dict[str, str]]],
    replies: list[str],
    score_batch,
    *,
    max_length: int,
    batch_size: int,
) -> torch.Tensor:
    """One score per (context, reply), from `score_batch(model, packed batch) -> (B,)`: (len(replies),) float32.

    The scoring passes of the reward model (rewards) and of evaluation (log-probs) share this
    loop; a reply that cannot be encoded within `max_length` is an error, not a silent skip.
    """
    demonstrations = [Demonstration(prompt=context, completion=reply) for context, reply in zip(contexts, replies)]
    encoded, report = encode_demonstrations(tokenizer, demonstrations, max_length=max_length)
    if report.kept != report.total:
        raise ValueError(f"Some replies could not be scored: {report.summary()}")
    model.eval()
    device = next(model.parameters()).device
    scores = []
    for start in range(0, len(encoded), batch_size):
        batch = pack_demonstrations(encoded[start : start + batch_size], pad_token_id=tokenizer.pad_token_id)
        scores.append(score_batch(model, batch.to(device)).float().cpu())
    return torch.cat(scores) if scores else torch.zeros(0)

