"""Preference pairs and demonstrations: reading them, and turning them into token ids.

Two text shapes are accepted, the same two TRL accepts:

- conversational: the context is a list of chat messages and each completion is one assistant
  reply; text goes through the tokenizer's chat template.
- standard: prompt and completions are plain strings; the EOS token is appended to each completion.

Encoding follows TRL 1.16 token for token (the parity tests check it): the prompt is rendered with
the assistant turn opened, each completion is rendered after it, and the completion starts where
the rendered prompt and the rendered prompt+completion stop agreeing.

Nothing is cut or dropped silently: every encode function returns an `EncodingReport` that counts
the pairs kept, truncated and dropped, with the reason.
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from training.transcripts import ParsedRow, RowError, common_prefix_length, hh_messages, hh_row_parse, trl_row_parse

Message = dict[str, str]
Prompt = list[Message] | str  # Chat messages (conversational) or plain text (standard).

# Why a pair was dropped; the keys of EncodingReport.dropped.
DROP_PROMPT_TOO_LONG = "prompt fills max_length"
DROP_SEQUENCE_TOO_LONG = "prompt+completion longer than max_length"
DROP_EMPTY_COMPLETION = "completion renders to no tokens"


@dataclass(frozen=True)
class PreferencePair:
    """One judgment: in `prompt`, `chosen` was preferred to `rejected`.

    `margin` is the judgment's strength (0 when unknown); the reward loss can demand that the
    chosen reward exceed the rejected one by at least this much.
    """

    prompt: Prompt
    chosen: str
    rejected: str
    margin: float = 0.0

    @property
    def conversational(self) -> bool:
        return not isinstance(self.prompt, str)


@dataclass(frozen=True)
class Demonstration:
    """An ideal reply written for a context, for supervised fine-tuning."""

    prompt: Prompt
    completion: str


@dataclass(frozen=True)
class EncodedPair:
    """Token ids of one pair: the shared prompt, then each completion (which ends with EOS)."""

    prompt_ids: tuple[int, ...]
    chosen_ids: tuple[int, ...]
    rejected_ids: tuple[int, ...]
    margin: float = 0.0

    @property
    def chosen_sequence(self) -> tuple[int, ...]:
        return self.prompt_ids + self.chosen_ids

    @property
    def rejected_sequence(self) -> tuple[int, ...]:
        return self.prompt_ids + self.rejected_ids

    @property
    def tokens(self) -> int:
        """Tokens a padding-free forward over both sequences costs when the prompt is shared."""
        shared = common_prefix_length(self.chosen_sequence, self.rejected_sequence)
        return len(self.chosen_sequence) + len(self.rejected_sequence) - shared


@dataclass(frozen=True)
class EncodedDemonstration:
    prompt_ids: tuple[int, ...]
    completion_ids: tuple[int, ...]


@dataclass
class EncodingReport:
    """What encoding did to the examples: kept, of which truncated, and dropped by reason."""

    total: int = 0
    kept: int = 0
    truncated: int = 0
    dropped: Counter = field(default_factory=Counter)

    def to_dict(self) -> dict:
        return {
            "total": self.total,
            "kept": self.kept,
            "truncated": self.truncated,
            "dropped": dict(self.dropped),
        }

    def summary(self) -> str:
        dropped = ", ".join(f"{count} ({reason})" for reason, count in self.dropped.items()) or "none"
        return f"{self.kept}/{self.total} kept, {self.truncated} truncated, dropped: {dropped}"


def _render(tokenizer: PreTrainedTokenizerBase, messages: list[Message], *, generation_prompt: bool) -> list[int]:
    ids = tokenizer.apply_chat_template(
        messages, tokenize=True, return_dict=True, add_generation_prompt=generation_prompt
    )["input_ids"]
    return list(ids)


def _prompt_and_completions(
    tokenizer: PreTrainedTokenizerBase, prompt: Prompt, completions: list[str]
) -> tuple[list[int], list[list[int]]]:
    """Split the rendered prompt+completion sequences into a shared prompt and completion ids."""
    if isinstance(prompt, str):
        prompt_ids = tokenizer(prompt)["input_ids"]
        fulls = []
        for completion in completions:
            if not completion.endswith(tokenizer.eos_token):
                completion = completion + tokenizer.eos_token
            fulls.append(tokenizer(prompt + completion)["input_ids"])
    else:
        prompt_ids = _render(tokenizer, list(prompt), generation_prompt=True)
        fulls = [
            _render(tokenizer, [*prompt, {"role": "assistant", "content": completion}], generation_prompt=False)
            for completion in completions
        ]
    # Templates can render a prompt differently alone than followed by a reply (and BPE can merge
    # across the boundary), so the completion starts where the two renderings stop agreeing.
    prompt_length = min(common_prefix_length(prompt_ids, full) for full in fulls)
    return list(prompt_ids[:prompt_length]), [list(full[prompt_length:]) for full in fulls]


def encode_pairs(
    tokenizer: PreTrainedTokenizerBase,
    pairs: Iterable[PreferencePair],
    *,
    max_length: int,
    overflow: str = "truncate",
) -> tuple[list[EncodedPair], EncodingReport]:
    """Tokenize preference pairs; each of prompt+chosen and prompt+rejected fits in `max_length`.

    overflow="truncate" (DPO, as TRL's `truncation_mode="keep_start"`): a completion is cut to what
    fits after the prompt; a pair whose prompt alone fills `max_length` is dropped, since it would
    keep no completion token. overflow="drop" (reward model, as TRL's RewardTrainer): a pair with
    either sequence longer than `max_length` is dropped whole.
    """
    if overflow not in ("truncate", "drop"):
        raise ValueError(f"overflow must be 'truncate' or 'drop', not {overflow!r}")
    report = EncodingReport()
    encoded = []
    for pair in pairs:
        report.total += 1
        prompt_ids, (chosen_ids, rejected_ids) = _prompt_and_completions(
            tokenizer, pair.prompt, [pair.chosen, pair.rejected]
        )
        if not chosen_ids or not rejected_ids:
            report.dropped[DROP_EMPTY_COMPLETION] += 1
            continue
        longest = len(prompt_ids) + max(len(chosen_ids), len(rejected_ids))
        if longest > max_length:
            if overflow == "drop":
                report.dropped[DROP_SEQUENCE_TOO_LONG] += 1
                continue
            if len(prompt_ids) >= max_length:
                report.dropped[DROP_PROMPT_TOO_LONG] += 1
                continue
            room = max_length - len(prompt_ids)
            chosen_ids, rejected_ids = chosen_ids[:room], rejected_ids[:room]
            report.truncated += 1
        report.kept += 1
        encoded.append(EncodedPair(tuple(prompt_ids), tuple(chosen_ids), tuple(rejected_ids), float(pair.margin)))
    return encoded, report


def encode_demonstrations(
    tokenizer: PreTrainedTokenizerBase, demonstrations: Iterable[Demonstration], *, max_length: int
) -> tuple[list[EncodedDemonstration], EncodingReport]:
    """Tokenize demonstrations; a completion is cut to fit, a prompt that fills `max_length` is dropped."""
    report = EncodingReport()
    encoded = []
    for demonstration in demonstrations:
        report.total += 1
        prompt_ids, (completion_ids,) = _prompt_and_completions(
            tokenizer, demonstration.prompt, [demonstration.completion]
        )
        if not completion_ids:
            report.dropped[DROP_EMPTY_COMPLETION] += 1
            continue
        if len(prompt_ids) + len(completion_ids) > max_length:
            if len(prompt_ids) >= max_length:
                report.dropped[DROP_PROMPT_TOO_LONG] += 1
                continue
            completion_ids = completion_ids[: max_length - len(prompt_ids)]
            report.truncated += 1
        report.kept += 1
        encoded.append(EncodedDemonstration(tuple(prompt_ids), tuple(completion_ids)))
    return encoded, report


# --- Readers ---------------------------------------------------------------------------------------


def _open_text(path: Path):
    path = Path(path)
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else path.open(encoding="utf-8")


def iter_jsonl(path: Path) -> Iterator[dict]:
    with _open_text(path) as lines:
        for number, line in enumerate(lines, start=1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as error:
                    raise ValueError(f"{path}:{number}: not valid JSON ({error.msg})") from error


def _reply_text(value, *, where: str) -> str:
    """A demonstration's completion is a string (standard) or a one-message assistant list (conversational)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and len(value) == 1 and value[0].get("role") == "assistant":
        return value[0]["content"]
    raise ValueError(f"{where}: a completion must be a string or one assistant message, got {value!r:.80}")


def _pair(parsed: ParsedRow, *, margin: float = 0.0) -> PreferencePair:
    return PreferencePair(prompt=parsed.prompt, chosen=parsed.chosen, rejected=parsed.rejected, margin=margin)


def pair_from_record(record: dict, *, where: str = "record") -> PreferencePair:
    """Read one TRL preference record, conversational or standard, with the web app's importer's
    parser (training.transcripts) in its training reading: standard rows stay plain text.

    Conversational: {"prompt": [messages], "chosen": [assistant message], "rejected": [...]}, or
    without "prompt", the messages the two lists share. Standard: {"prompt": "...", "chosen": "...",
    "rejected": "..."}, or without "prompt", two HH transcripts. An optional "margin" (or the
    app's "strength") becomes the pair's margin.
    """
    missing = sorted({"chosen", "rejected"} - record.keys()) if isinstance(record, dict) else []
    if missing:
        # The training CLI has always named the keys a record lacks; the parser says only what it expects.
        raise ValueError(f"{where}: missing {missing}")
    try:
        parsed = trl_row_parse(record, exact=False)
    except RowError as error:
        raise ValueError(f"{where}: {error}") from None
    margin = parsed.margin if parsed.margin is not None else float(record.get("strength", 0.0) or 0.0)
    return _pair(parsed, margin=margin)


def read_preference_jsonl(path: Path) -> list[PreferencePair]:
    """Read a JSONL file of preference pairs in TRL's conversational or standard format."""
    return [pair_from_record(record, where=f"{path}:{index}") for index, record in enumerate(iter_jsonl(path), 1)]


def read_demonstration_jsonl(path: Path) -> list[Demonstration]:
    """Read demonstrations: {"prompt": ..., "completion": ...} or {"messages": [..., assistant]}."""
    demonstrations = []
    for index, record in enumerate(iter_jsonl(path), 1):
        where = f"{path}:{index}"
        if "messages" in record:
            messages = record["messages"]
            if not messages or messages[-1].get("role") != "assistant":
                raise ValueError(f"{where}: the last message must be the assistant's reply")
            demonstrations.append(Demonstration(prompt=messages[:-1], completion=messages[-1]["content"]))
        elif {"prompt", "completion"} <= record.keys():
            demonstrations.append(
                Demonstration(prompt=record["prompt"], completion=_reply_text(record["completion"], where=where))
            )
        else:
            raise ValueError(f"{where}: expected 'messages' or 'prompt' and 'completion'")
    return demonstrations


def read_context_jsonl(path: Path) -> list[list[Message]]:
    """Read contexts for generation or evaluation: {"prompt": [messages]} or {"messages": [...]}."""
    contexts = []
    for index, record in enumerate(iter_jsonl(path), 1):
        messages = record.get("prompt", record.get("messages"))
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        if not isinstance(messages, list) or not messages:
            raise ValueError(f"{path}:{index}: expected 'prompt' or 'messages' holding chat messages")
        contexts.append(messages)
    return contexts


# --- Anthropic HH-RLHF -----------------------------------------------------------------------------


def parse_hh_transcript(text: str) -> list[Message]:
    """Split a "\\n\\nHuman: ... \\n\\nAssistant: ..." transcript into chat messages, each stripped.

    Text before the first marker belongs to no turn and is dropped.
    """
    return hh_messages(text, exact=False)


def hh_pair(chosen: str, rejected: str) -> PreferencePair:
    """Turn one HH record into a conversational pair, with the parser the web app imports HH with.

    The prompt is the longest common prefix of the two transcripts that ends in "\\n\\nAssistant:";
    what follows it in each transcript, stripped, is that completion. A row that cannot be read
    raises RowError, a ValueError.
    """
    return _pair(hh_row_parse({"chosen": chosen, "rejected": rejected}, exact=False))


def read_hh_jsonl(path: Path, *, limit: int | None = None) -> list[PreferencePair]:
    """Read Anthropic HH-RLHF records ({"chosen": transcript, "rejected": transcript})."""
    pairs = []
    for index, record in enumerate(iter_jsonl(path), 1):
        if limit is not None and len(pairs) >= limit:
            break
        try:
            pairs.append(_pair(hh_row_parse(record, exact=False)))
        except RowError as error:
            raise ValueError(f"{path}:{index}: {error}") from None
    return pairs


def pair_to_trl_record(pair: PreferencePair) -> dict:
    """The TRL record for a pair, the inverse of `pair_from_record` (used by exports and benchmarks)."""
    if pair.conversational:
        return {
            "prompt": list(pair.prompt),
            "chosen": [{"role": "assistant", "content": pair.chosen}],
            "rejected": [{"role": "assistant", "content": pair.rejected}],
        }
    return {"prompt": pair.prompt, "chosen": pair.chosen, "rejected": pair.rejected}
