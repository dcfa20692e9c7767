"""Anthropic HH-RLHF transcripts and TRL preference rows: the one parser both the training CLI
(`training.data`) and the web app's importer (`preference_app.api.parsing`) read them with.

Pure Python, with no torch and no Django, so that the web app can import it without loading
either. The two readers differ in one policy, chosen by `exact`:

- exact=True, the importer's: every row becomes chat messages whose text is kept to the
  character, so that exporting what was imported gives the file back (a turn's text must follow
  its marker after one space, and text before the first marker becomes a system message).
- exact=False, the trainer's: HH turns and replies are stripped of surrounding whitespace, text
  before the first marker is dropped, and TRL's standard rows stay plain text, as TRL tokenizes them.

Errors are `RowError`s, a ValueError whose message says what is wrong with the row; each reader
adds where the row came from.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

HUMAN = "\n\nHuman:"
ASSISTANT = "\n\nAssistant:"
MARKER_ROLES = {HUMAN: "user", ASSISTANT: "assistant"}
ROLES = ("system", "user", "assistant")
_MARKER = re.compile(f"({re.escape(HUMAN)}|{re.escape(ASSISTANT)})")
_ROLE_MARKERS = {role: marker for marker, role in MARKER_ROLES.items()}

Message = dict[str, str]


class RowError(ValueError):
    """A preference row that cannot be read; the message says what is wrong with it."""


@dataclass(frozen=True)
class ParsedRow:
    """One preference row: its prompt (chat messages, or plain text for a TRL standard row read
    with exact=False), the chosen and rejected replies, and the `margin` column when it has one."""

    prompt: list[Message] | str
    chosen: str
    rejected: str
    margin: float | None = None


def common_prefix_length(first: Sequence, second: Sequence) -> int:
    """How many leading items (characters, token ids) the two sequences share."""
    length = 0
    for item, other in zip(first, second):
        if item != other:
            break
        length += 1
    return length


def transcript_split(transcript: str) -> tuple[str, list[tuple[str, str]]]:
    """The text before the first marker, and each turn as (role, text after its marker), text as is."""
    parts = _MARKER.split(transcript)
    return parts[0], [(MARKER_ROLES[marker], text) for marker, text in zip(parts[1::2], parts[2::2])]


def prompt_cut(chosen: str, rejected: str) -> int:
    """Where the shared prompt of two HH transcripts ends: the start of the last "\\n\\nAssistant:"
    lying wholly inside their common prefix, or -1 when there is none. The replies follow that marker."""
    return chosen.rfind(ASSISTANT, 0, common_prefix_length(chosen, rejected))


def hh_transcript(messages: list[Message]) -> str:
    """Render messages as an HH transcript: "\\n\\nHuman: text\\n\\nAssistant: text".

    A system message has no marker in that format; its text is written as is, before the turn that
    follows, which is where Anthropic's legacy prompt format put it (and what `hh_messages` reads
    back as a system message).
    """
    parts = []
    for message in messages:
        marker = _ROLE_MARKERS.get(message["role"])
        parts.append(message["content"] if marker is None else f"{marker} {message['content']}")
    return "".join(parts)


def text_check(text: str, what: str) -> str:
    """Refuse text no reader can keep: PostgreSQL text cannot hold NUL characters, and a lone
    surrogate (which JSON's "\\ud800" escapes decode to) is not text that UTF-8, a database or a
    tokenizer can encode."""
    if "\x00" in text:
        raise RowError(f"{what} contains a NUL character.")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise RowError(f"{what} contains a lone surrogate (U+{ord(text[error.start]):04X}), which is not text.") from None
    return text


def _after_space(text: str, what: str) -> str:
    """A turn or reply as the importer stores it: the text after the one space that follows its marker."""
    if not text.startswith(" "):
        raise RowError(f"{what} must follow the marker after one space, so that it can be written back exactly.")
    return text[1:]


def _reply(text: str, what: str, *, exact: bool) -> str:
    return text_check(_after_space(text, what) if exact else text.strip(), what)


def hh_messages(transcript: str, *, exact: bool) -> list[Message]:
    """The chat messages of an HH transcript (see the module's docstring for what `exact` keeps)."""
    preamble, turns = transcript_split(transcript)
    if not exact:
        return [{"role": role, "content": text_check(text.strip(), "A turn")} for role, text in turns]
    messages = [{"role": "system", "content": text_check(preamble, "The text before the first turn")}] if preamble else []
    for role, text in turns:
        content = _after_space(text, "Every turn") if text else text
        messages.append({"role": role, "content": text_check(content, "A turn")})
    if hh_transcript(messages) != transcript:
        raise RowError("The transcript cannot be stored so that it is written back exactly.")
    return messages


def hh_row_parse(row, *, exact: bool) -> ParsedRow:
    """An HH-RLHF row: the prompt is the longest common prefix of its two transcripts ending in
    "\\n\\nAssistant:", and what follows that marker in each transcript is its reply."""
    if not isinstance(row, dict) or not isinstance(row.get("chosen"), str) or not isinstance(row.get("rejected"), str):
        raise RowError('expected an object with string "chosen" and "rejected" transcripts.')
    chosen, rejected = row["chosen"], row["rejected"]
    end = prompt_cut(chosen, rejected)
    if end < 0:
        raise RowError('"chosen" and "rejected" share no prefix ending in "\\n\\nAssistant:".')
    messages = hh_messages(chosen[:end], exact=exact)
    if not any(message["role"] == "user" for message in messages):
        raise RowError("the transcripts have no Human turn before the replies.")
    reply_start = end + len(ASSISTANT)
    return ParsedRow(
        prompt=messages,
        chosen=_reply(chosen[reply_start:], "The chosen reply", exact=exact),
        rejected=_reply(rejected[reply_start:], "The rejected reply", exact=exact),
    )


def _chat_messages(value, what: str) -> list[Message]:
    if not isinstance(value, list) or not all(
        isinstance(message, dict)
        and message.get("role") in ROLES
        and isinstance(message.get("content"), str)
        and set(message) == {"role", "content"}
        for message in value
    ):
        raise RowError(f'"{what}" must be a list of {{"role", "content"}} messages with role system, user or assistant.')
    for message in value:
        text_check(message["content"], f'A message of "{what}"')
    return value


def _single_reply(messages: list[Message], what: str) -> str:
    if len(messages) != 1 or messages[0]["role"] != "assistant":
        raise RowError(f'"{what}" must hold exactly one assistant message after the prompt.')
    return messages[0]["content"]


def _margin(row: dict) -> float | None:
    if "margin" not in row:
        return None
    margin = row["margin"]
    if isinstance(margin, bool) or not isinstance(margin, (int, float)):
        raise RowError('"margin" must be a number.')
    if isinstance(margin, float) and not math.isfinite(margin):
        # A margin of 1e999 decodes to infinity, which neither a loss nor the importer's rounding can take.
        raise RowError(f'"margin" must be finite, not {margin}.')
    return float(margin)


def _conversational_row(row: dict, margin: float | None) -> ParsedRow:
    """A conversational TRL row; without a "prompt", the prompt is the messages both lists share."""
    chosen, rejected = _chat_messages(row["chosen"], "chosen"), _chat_messages(row["rejected"], "rejected")
    if "prompt" in row:
        messages = _chat_messages(row["prompt"], "prompt")
    else:
        shared = 0
        while shared < min(len(chosen), len(rejected)) - 1 and chosen[shared] == rejected[shared]:
            shared += 1
        messages, chosen, rejected = chosen[:shared], chosen[shared:], rejected[shared:]
    if not messages:
        raise RowError("the pair has no prompt messages before the replies.")
    return ParsedRow(messages, _single_reply(chosen, "chosen"), _single_reply(rejected, "rejected"), margin)


def _standard_row(row: dict, margin: float | None, *, exact: bool) -> ParsedRow:
    """A standard TRL row: plain strings, the replies continuing the prompt's text. Read exactly,
    an HH-shaped prompt becomes its messages, any other a user message, and the one space a reply
    usually starts with is dropped; otherwise the strings are kept as TRL tokenizes them."""
    prompt = row["prompt"]
    if not isinstance(prompt, str) or not prompt.strip():
        raise RowError('"prompt" must be a non-empty string when the replies are strings.')
    if not exact:
        return ParsedRow(text_check(prompt, '"prompt"'), text_check(row["chosen"], '"chosen"'),
                         text_check(row["rejected"], '"rejected"'), margin)
    if prompt.startswith(HUMAN) and prompt.endswith(ASSISTANT):
        messages = hh_messages(prompt[: -len(ASSISTANT)], exact=True)
    else:
        messages = [{"role": "user", "content": text_check(prompt, '"prompt"')}]
    chosen, rejected = (text[1:] if text.startswith(" ") else text for text in (row["chosen"], row["rejected"]))
    return ParsedRow(messages, text_check(chosen, '"chosen"'), text_check(rejected, '"rejected"'), margin)


def trl_row_parse(row, *, exact: bool) -> ParsedRow:
    """A TRL preference row, conversational or standard, with an explicit or implicit prompt; a
    standard row without a prompt holds two HH transcripts."""
    if not isinstance(row, dict) or "chosen" not in row or "rejected" not in row:
        raise RowError('expected an object with "chosen" and "rejected".')
    margin = _margin(row)
    if isinstance(row["chosen"], list):
        return _conversational_row(row, margin)
    if not isinstance(row["chosen"], str) or not isinstance(row["rejected"], str):
        raise RowError('"chosen" and "rejected" must both be strings or both be lists of messages.')
    if "prompt" not in row:
        parsed = hh_row_parse(row, exact=exact)
        return ParsedRow(parsed.prompt, parsed.chosen, parsed.rejected, margin)
    return _standard_row(row, margin, exact=exact)
