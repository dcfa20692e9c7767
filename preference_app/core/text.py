"""Checks on text people write: prompts, chat messages, edited replies."""

from __future__ import annotations

import unicodedata


def reads_as_blank(text: str) -> bool:
    """Whether `text` shows nothing: it holds only whitespace and invisible format characters.

    Format characters are Unicode category Cf: zero-width space, non-joiner and joiner
    (U+200B to U+200D), word joiner (U+2060), the byte-order mark (U+FEFF), direction marks and the
    like. str.strip() keeps them, so a prompt of zero-width spaces would otherwise be stored and
    shown to annotators as an empty card.
    """
    return all(character.isspace() or unicodedata.category(character) == "Cf" for character in text)
