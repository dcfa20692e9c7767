"""Parsing HH-RLHF and TRL preference rows into pairs (context messages, chosen and rejected replies)."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass

from preference_app.api import formats
from preference_app.api.models import ImportedPair
from preference_app.core.errors import InvalidInput
from training import transcripts

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class ParsedPair:
    messages: list[dict[str, str]]  # The context before the two replies.
    chosen: str
    rejected: str
    strength: int | None = None  # From a TRL `margin` column, when the file has one.


def _check_text(text: str, what: str) -> str:
    # PostgreSQL text cannot hold NUL characters; rejecting them here keeps both databases alike.
    if "\x00" in text:
        raise InvalidInput(f"{what} contains a NUL character.")
    # JSON's "\ud800" escapes decode to a lone surrogate, which no database can store as UTF-8.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise InvalidInput(
            f"{what} contains a lone surrogate (U+{ord(text[error.start]):04X}), which is not text."
        ) from None
    return text


def _after_space(completion: str, what: str) -> str:
    """A reply as stored: the text after the one space that follows "Assistant:" in a transcript."""
    if not completion.startswith(" "):
        raise InvalidInput(f"{what} must follow the marker after one space, so that it can be written back exactly.")
    return completion[1:]


def hh_transcript_parse(transcript: str) -> list[dict[str, str]]:
    """Messages of an HH transcript: text before the first marker becomes a system message."""
    preamble, turns = transcripts.transcript_split(transcript)
    messages = [{"role": "system", "content": _check_text(preamble, "The text before the first turn")}] if preamble else []
    for role, text in turns:
        content = _after_space(text, "Every turn") if text else text
        messages.append({"role": role, "content": _check_text(content, "A turn")})
    if formats.hh_transcript(messages) != transcript:
        raise InvalidInput("The transcript cannot be stored so that it is written back exactly.")
    return messages


def hh_pair_parse(row) -> ParsedPair:
    """An HH-RLHF pair: the prompt is the longest common prefix ending in "\\n\\nAssistant:"."""
    if not isinstance(row, dict) or not isinstance(row.get("chosen"), str) or not isinstance(row.get("rejected"), str):
        raise InvalidInput('expected an object with string "chosen" and "rejected" transcripts.')
    chosen, rejected = row["chosen"], row["rejected"]
    end = transcripts.prompt_cut(chosen, rejected)
    if end < 0:
        raise InvalidInput('"chosen" and "rejected" share no prefix ending in "\\n\\nAssistant:".')
    prompt_end = end + len(transcripts.ASSISTANT)
    messages = hh_transcript_parse(chosen[: end])
    if not any(message["role"] == "user" for message in messages):
        raise InvalidInput("the transcripts have no Human turn before the replies.")
    return ParsedPair(
        messages=messages,
        chosen=_check_text(_after_space(chosen[prompt_end:], "The chosen reply"), "The chosen reply"),
        rejected=_check_text(_after_space(rejected[prompt_end:], "The rejected reply"), "The rejected reply"),
    )


def _messages(value, what: str) -> list[dict[str, str]]:
    if not isinstance(value, list) or not all(
        isinstance(message, dict)
        and message.get("role") in ROLES
        and isinstance(message.get("content"), str)
        and set(message) == {"role", "content"}
        for message in value
    ):
        raise InvalidInput(f'"{what}" must be a list of {{"role", "content"}} messages with role system, user or assistant.')
    for message in value:
        _check_text(message["content"], f'A message of "{what}"')
    return value


def _single_reply(messages: list[dict[str, str]], what: str) -> str:
    if len(messages) != 1 or messages[0]["role"] != "assistant":
        raise InvalidInput(f'"{what}" must hold exactly one assistant message after the prompt.')
    return messages[0]["content"]


def _margin_strength(row: dict) -> int | None:
    if "margin" not in row:
        return None
    margin = row["margin"]
    if isinstance(margin, bool) or not isinstance(margin, (int, float)):
        raise InvalidInput('"margin" must be a number.')
    if isinstance(margin, float) and not math.isfinite(margin):
        # A margin of 1e999 decodes to infinity, which round() below cannot take.
        raise InvalidInput(f'"margin" must be finite, not {margin}.')
    # Exports write the mean strength (1-4) as the margin; rounding and clamping reads it back.
    return min(4, max(1, round(margin)))


def trl_pair_parse(row) -> ParsedPair:
    """A TRL preference row: conversational or standard, with an explicit or implicit prompt."""
    if not isinstance(row, dict) or "chosen" not in row or "rejected" not in row:
        raise InvalidInput('expected an object with "chosen" and "rejected".')
    strength = _margin_strength(row)
    if isinstance(row["chosen"], list):
        chosen, rejected = _messages(row["chosen"], "chosen"), _messages(row["rejected"], "rejected")
        if "prompt" in row:
            messages = _messages(row["prompt"], "prompt")
        else:
            shared = 0
            while shared < min(len(chosen), len(rejected)) - 1 and chosen[shared] == rejected[shared]:
                shared += 1
            messages, chosen, rejected = chosen[:shared], chosen[shared:], rejected[shared:]
        if not messages:
            raise InvalidInput("the pair has no prompt messages before the replies.")
        return ParsedPair(messages, _single_reply(chosen, "chosen"), _single_reply(rejected, "rejected"), strength)
    if not isinstance(row["chosen"], str) or not isinstance(row["rejected"], str):
        raise InvalidInput('"chosen" and "rejected" must both be strings or both be lists of messages.')
    if "prompt" not in row:
        parsed = hh_pair_parse(row)
        return ParsedPair(parsed.messages, parsed.chosen, parsed.rejected, strength)
    prompt = row["prompt"]
    if not isinstance(prompt, str) or not prompt.strip():
        raise InvalidInput('"prompt" must be a non-empty string when the replies are strings.')
    if prompt.startswith(transcripts.HUMAN) and prompt.endswith(transcripts.ASSISTANT):
        messages = hh_transcript_parse(prompt[: -len(transcripts.ASSISTANT)])
    else:
        messages = [{"role": "user", "content": _check_text(prompt, '"prompt"')}]
    # Standard-format replies continue the prompt text, usually after one space, which is dropped.
    chosen, rejected = (text[1:] if text.startswith(" ") else text for text in (row["chosen"], row["rejected"]))
    return ParsedPair(messages, _check_text(chosen, '"chosen"'), _check_text(rejected, '"rejected"'), strength)


PARSERS: dict[str, Callable[[object], ParsedPair]] = {
    ImportedPair.Format.HH: hh_pair_parse,
    ImportedPair.Format.TRL: trl_pair_parse,
}


def pair_key(pair: ParsedPair) -> str:
    canonical = json.dumps([pair.messages, pair.chosen, pair.rejected], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()
