"""Preference rules for simulated annotators in benchmarks: a hidden taste a loop should learn.

Each rule is `rule(prompt, first, second) -> (choice, strength)`: choice "a" when `first` is the
better reply, "b" when `second` is, "tie" when the rule cannot tell them apart; strength 1-4 as an
annotator gives it (1, and not used, for a tie). A rule looks at one property only, and when both replies
have it or neither does it says "tie" rather than break the tie on something else (length, say):
a tie-break would be a second taste the policy could learn instead of the first, and the learning
curve would no longer measure the property alone. Ties are left out of training by the app.

Rules are symmetric: swapping `first` and `second` swaps "a" and "b" and keeps the strength.

`shorter_reply` is for smoke runs only: replies of a few tokens almost never hold a list or a
question, so the rules above call nearly every pair a tie and a round has nothing to train on.
"""

from __future__ import annotations

import re

# A sentence that ends in "?": some letters, then anything but a sentence end, then the question mark.
QUESTION = re.compile(r"[A-Za-z][^.!?\n]*\?")
# A list item: a line that starts (after indentation) with "- ", "* ", "• ", "1. " or "1) ".
# A figure: any decimal digit ("3 cups", "1990", "10%").
DIGIT = re.compile(r"[0-9]")
LIST_ITEM = re.compile(r"^\s*(?:[-*•]|\d{1,2}[.)])\s+\S", re.MULTILINE)
MIN_LIST_ITEMS = 2
STRENGTH = 3  # "Clearly better": the property is either there or not.


def asks_question(text: str) -> bool:
    """True when the reply contains a sentence ending in a question mark."""
    return QUESTION.search(text) is not None


def has_list(text: str) -> bool:
    """True when the reply has at least MIN_LIST_ITEMS bulleted or numbered lines."""
    return len(LIST_ITEM.findall(text)) >= MIN_LIST_ITEMS


def has_figure(text: str) -> bool:
    """True when the reply contains a digit: a number, a date, a quantity."""
    return DIGIT.search(text) is not None


def has_paragraphs(text: str) -> bool:
    """True when the reply has at least two non-empty lines: it is broken up rather than one block."""
    return sum(1 for line in text.splitlines() if line.strip()) >= 2


def _prefer(first_has: bool, second_has: bool) -> tuple[str, int]:
    if first_has == second_has:
        return "tie", 1  # Strength is not used for a tie; 1 keeps it in the documented range.
    return ("a" if first_has else "b"), STRENGTH


def asks_clarifying_question(prompt: str, first: str, second: str) -> tuple[str, int]:
    """Prefer the reply that asks the user a question (a sentence ending in "?"); else a tie."""
    return _prefer(asks_question(first), asks_question(second))


def bulleted_list(prompt: str, first: str, second: str) -> tuple[str, int]:
    """Prefer the reply that contains a bulleted or numbered list (two or more items); else a tie."""
    return _prefer(has_list(first), has_list(second))


def gives_figures(prompt: str, first: str, second: str) -> tuple[str, int]:
    """Prefer the reply that gives a concrete figure (contains a digit); else a tie.

    SmolLM2's own replies contain a digit about a quarter of the time, so this rule decides more than
    a third of random pairs, where bulleted_list decides about a fifth and a question about a seventh.
    """
    return _prefer(has_figure(first), has_figure(second))


def in_paragraphs(prompt: str, first: str, second: str) -> tuple[str, int]:
    """Prefer the reply broken into paragraphs or lines over one unbroken block; else a tie.

    A readability taste. About half of SmolLM2's 64-token replies are broken up, so this rule decides
    about half of random pairs, where asks_clarifying_question decided 3 of 50 held-out base pairs.
    """
    return _prefer(has_paragraphs(first), has_paragraphs(second))


def shorter_reply(prompt: str, first: str, second: str) -> tuple[str, int]:
    """Prefer the shorter reply in characters (bench/round.py's rule); for smoke runs, since it
    decides almost every pair however short the replies are."""
    if len(first) == len(second):
        return "tie", 1
    return ("a" if len(first) < len(second) else "b"), 2
