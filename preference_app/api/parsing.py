"""HH-RLHF and TRL preference rows as the importer stores them: pairs of context messages, chosen
and rejected replies, and a strength. The parsing itself is done by training.transcripts, the one
HH/TRL parser, which the training CLI reads the same files with; this module only asks it for the
exact reading, turns its errors into InvalidInput and its margin into a judgment's strength."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass

from preference_app.api.models import ImportedPair
from preference_app.core.errors import InvalidInput
from training import transcripts


@dataclass(frozen=True)
class ParsedPair:
    messages: list[dict[str, str]]  # The context before the two replies.
    chosen: str
    rejected: str
    strength: int | None = None  # From a TRL `margin` column, when the file has one.


def _strength(margin: float | None) -> int | None:
    """Exports write the mean strength (1-4) as the margin; rounding and clamping reads it back."""
    return None if margin is None else min(4, max(1, round(margin)))


def _stored(parse: Callable[..., transcripts.ParsedRow], row) -> ParsedPair:
    """Read a row exactly with the one HH/TRL parser (training.transcripts), its errors as InvalidInput."""
    try:
        parsed = parse(row, exact=True)
    except transcripts.RowError as error:
        raise InvalidInput(str(error)) from None
    return ParsedPair(parsed.prompt, parsed.chosen, parsed.rejected, _strength(parsed.margin))


def hh_pair_parse(row) -> ParsedPair:
    """An HH-RLHF pair: the prompt is the longest common prefix ending in "\\n\\nAssistant:"."""
    return _stored(transcripts.hh_row_parse, row)


def trl_pair_parse(row) -> ParsedPair:
    """A TRL preference row: conversational or standard, with an explicit or implicit prompt."""
    return _stored(transcripts.trl_row_parse, row)


PARSERS: dict[str, Callable[[object], ParsedPair]] = {
    ImportedPair.Format.HH: hh_pair_parse,
    ImportedPair.Format.TRL: trl_pair_parse,
}


def pair_key(pair: ParsedPair) -> str:
    canonical = json.dumps([pair.messages, pair.chosen, pair.rejected], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()
