"""Anthropic HH-RLHF transcripts as plain text: their turn markers, splitting them into turns, and
where the two transcripts of a pair part.

Pure Python, with no torch and no Django, so that both the training CLI (`training.data`) and the
web app's importer (`preference_app.api.parsing`) read HH files through this one module; each
adds its own policy on top (the importer insists on an exact round trip, training strips spaces).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

HUMAN = "\n\nHuman:"
ASSISTANT = "\n\nAssistant:"
MARKER_ROLES = {HUMAN: "user", ASSISTANT: "assistant"}
_MARKER = re.compile(f"({re.escape(HUMAN)}|{re.escape(ASSISTANT)})")


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
