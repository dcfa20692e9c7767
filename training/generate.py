"""Batched sampling of K candidate replies per conversation context.

All contexts of a call, each repeated K times, go through `model.generate` together with left
padding (so every row's next token sits at the same position) and stop at the tokenizer's EOS.
Each reply keeps the token ids that were sampled, so log pi(y|x) can later be computed on exactly
those ids (see training.evaluate) rather than on its text re-encoded.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.generation.streamers import BaseStreamer

from training.runtime import set_seed

Message = dict[str, str]


@dataclass(frozen=True)
class GenerationConfig:
    """Sampling settings; stored beside every candidate so a reply can be reproduced."""

    candidates_per_context: int = 2  # K: replies sampled for each context.
    max_new_tokens: int = 128  # Hard cap on reply length; a reply cut here has finished_with_eos False.
    temperature: float = 0.8  # Softmax temperature; 0 means greedy decoding.
    top_p: float = 0.95  # Nucleus sampling mass.
    seed: int = 0  # Seeds torch before sampling so a batch can be regenerated exactly.
    batch_size: int = 32  # Rows (context x K) per forward pass; bounds peak memory.
    max_context_tokens: int = 1024  # Contexts longer than this keep only their most recent tokens.

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class GeneratedReply:
    text: str  # The reply decoded without special tokens and stripped, as shown to annotators.
    token_count: int  # Tokens of the reply, not counting the EOS that ended it.
    finished_with_eos: bool  # False when the reply was cut at max_new_tokens.
    seconds: float  # This reply's share of its batch's wall time.
    # The ids the model sampled, in order, ending with the EOS id when it ended with EOS (that token
    # was sampled too and its probability is part of log pi(y|x)); never any padding after it.
    # Empty only for replies built by hand rather than sampled.
    token_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class Progress:
    """How far a `generate_replies` call has got, reported while it runs."""

    fraction: float  # Of all rows' tokens, counting each row as max_new_tokens long.
    rows_done: int  # Rows (context x K) whose batch has finished.
    rows_total: int
    # The text written so far by each row of the batch being generated, keyed by its index in the
    # flattened output (context index * K + candidate index).
    partial: dict[int, str] = field(default_factory=dict)


OnProgress = Callable[[Progress], None]


def encode_contexts(
    tokenizer: PreTrainedTokenizerBase, contexts: list[list[Message]], max_context_tokens: int
) -> list[list[int]]:
    """The prompt ids `generate_replies` samples after: each context rendered through the chat
    template with the assistant turn opened, keeping only its last `max_context_tokens` ids.

    A reply's `token_ids` continue exactly these ids (with the same `max_context_tokens`).
    """
    encoded = []
    for messages in contexts:
        ids = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=False
        )
        if hasattr(ids, "input_ids"):
            ids = ids["input_ids"]
        encoded.append(list(ids)[-max_context_tokens:])
    return encoded


@torch.inference_mode()
def generate_replies(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    contexts: list[list[Message]],
    config: GenerationConfig,
    on_progress: OnProgress | None = None,
    progress_interval: float = 0.25,
    partial_text: bool = False,
) -> list[list[GeneratedReply]]:
    """Sample `config.candidates_per_context` replies for every context, in batches.

    Returns one list of K replies per context, in the order the contexts were given. `on_progress`,
    when given, is called at most every `progress_interval` seconds while tokens are written, and
    once when every batch is done; its `partial` holds the rows' text so far only with `partial_text`
    (decoding every row at each report is work a caller that shows no text should not pay for).
    """
    set_seed(config.seed)
    k = config.candidates_per_context
    prompts = encode_contexts(tokenizer, contexts, config.max_context_tokens)
    rows = [(context_index, prompts[context_index]) for context_index in range(len(prompts)) for _ in range(k)]
    # Sorting rows by prompt length keeps rows of similar length in one batch, so little of each
    # forward pass is spent on padding; results are put back in context order below.
    order = sorted(range(len(rows)), key=lambda row: len(rows[row][1]))
    replies: list[GeneratedReply | None] = [None] * len(rows)
    for start in range(0, len(order), config.batch_size):
        batch_rows = order[start : start + config.batch_size]
        streamer = None
        if on_progress is not None:
            streamer = _ProgressStreamer(tokenizer, batch_rows, start, len(rows), config.max_new_tokens,
                                         on_progress, progress_interval, partial_text)
        batch_replies = _generate_batch(model, tokenizer, [rows[row][1] for row in batch_rows], config, streamer)
        for row, reply in zip(batch_rows, batch_replies):
            replies[row] = reply
    if on_progress is not None:
        on_progress(Progress(fraction=1.0, rows_done=len(rows), rows_total=len(rows)))
    return [replies[index * k : (index + 1) * k] for index in range(len(contexts))]


class _ProgressStreamer(BaseStreamer):
    """Counts the steps `model.generate` takes on one batch and reports the share of the work done
    (and, with `partial_text`, each row's text so far) at most every `interval` seconds.

    transformers' own streamers take one row; this one takes the (B,) tensor of each step's tokens.
    """

    def __init__(self, tokenizer, batch_rows: list[int], rows_before: int, rows_total: int, max_new_tokens: int,
                 on_progress: OnProgress, interval: float, partial_text: bool):
        self.tokenizer = tokenizer
        self.partial_text = partial_text
        self.batch_rows = batch_rows
        self.rows_before = rows_before
        self.rows_total = rows_total
        self.max_new_tokens = max_new_tokens
        self.on_progress = on_progress
        self.interval = interval
        self.tokens: list[list[int]] = [[] for _ in batch_rows]
        self.ended = [False] * len(batch_rows)
        self.steps = 0
        self.prompt_seen = False
        self.last_report = 0.0

    def put(self, value: torch.Tensor) -> None:
        # The first call carries the prompt ids; every later one the token each row just sampled.
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        self.steps += 1
        if self.partial_text:
            for position, token in enumerate(value.reshape(-1).tolist()):
                if self.ended[position]:
                    continue
                if token == self.tokenizer.eos_token_id:
                    self.ended[position] = True
                else:
                    self.tokens[position].append(token)
        now = time.monotonic()
        if now - self.last_report >= self.interval:
            self.last_report = now
            self._report()

    def end(self) -> None:
        self._report()

    def _report(self) -> None:
        written = min(1.0, self.steps / max(1, self.max_new_tokens))
        done = self.rows_before + len(self.batch_rows) * written
        partial = {}
        if self.partial_text:
            partial = {row: self.tokenizer.decode(tokens, skip_special_tokens=True).strip()
                       for row, tokens in zip(self.batch_rows, self.tokens)}
        self.on_progress(Progress(fraction=done / self.rows_total, rows_done=self.rows_before,
                                  rows_total=self.rows_total, partial=partial))


def _generate_batch(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[list[int]],
    config: GenerationConfig,
    streamer: BaseStreamer | None = None,
) -> list[GeneratedReply]:
    pad_id = tokenizer.pad_token_id
    width = max(len(prompt) for prompt in prompts)
    input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)  # (B, T)
    attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)  # (B, T)
    for row, prompt in enumerate(prompts):
        input_ids[row, width - len(prompt) :] = torch.tensor(prompt)
        attention_mask[row, width - len(prompt) :] = 1
    device = next(model.parameters()).device
    sampling = config.temperature > 0
    started = time.perf_counter()
    output = model.generate(
        input_ids=input_ids.to(device),
        attention_mask=attention_mask.to(device),
        max_new_tokens=config.max_new_tokens,
        do_sample=sampling,
        temperature=config.temperature if sampling else None,
        top_p=config.top_p if sampling else None,
        top_k=None,
        pad_token_id=pad_id,
        eos_token_id=tokenizer.eos_token_id,
        streamer=streamer,
    )
    seconds = (time.perf_counter() - started) / len(prompts)
    completions = output[:, width:].cpu()  # (B, new tokens)
    replies = []
    for row in completions.tolist():
        # Rows that finished early are filled with padding after their EOS (whose id may equal
        # the pad id), so the reply is everything up to and including its first EOS.
        finished = tokenizer.eos_token_id in row
        sampled = row[: row.index(tokenizer.eos_token_id) + 1] if finished else row
        tokens = sampled[:-1] if finished else sampled
        replies.append(
            GeneratedReply(
                text=tokenizer.decode(tokens, skip_special_tokens=True).strip(),
                token_count=len(tokens),
                finished_with_eos=finished,
                seconds=seconds,
                token_ids=tuple(sampled),
            )
        )
    return replies
