"""Input of the annotation pages. The forms check shape and size; services decide what it means."""

from __future__ import annotations

from django import forms

from preference_app.annotation import chat, services
from preference_app.core.services import ALLOWED_FLAGS, MAX_RATIONALE_CHARS

# The order of the scale as laid out on the page, with the key that picks each point.
SCALE_POINTS = [
    ("1", "A is much better"),
    ("2", "A is better"),
    ("3", "A is somewhat better"),
    ("4", "A is slightly better"),
    ("5", "B is slightly better"),
    ("6", "B is somewhat better"),
    ("7", "B is better"),
    ("8", "B is much better"),
]
EXTRA_POINTS = [(services.TIE, "About the same"), (services.BOTH_BAD, "Both are bad")]
FLAG_CHOICES = [(flag, flag.capitalize()) for flag in sorted(ALLOWED_FLAGS)]


class JudgmentForm(forms.Form):
    preference = forms.ChoiceField(
        choices=SCALE_POINTS + EXTRA_POINTS,
        error_messages={"required": "Choose a point on the scale, “about the same” or “both are bad”."},
    )
    rationale = forms.CharField(required=False, max_length=MAX_RATIONALE_CHARS)
    flags = forms.MultipleChoiceField(choices=FLAG_CHOICES, required=False)


class ChatJudgmentForm(JudgmentForm):
    # Both boxes arrive prefilled with the original replies; a changed one is an edit.
    edit_left = forms.CharField(required=False, strip=False, max_length=chat.MAX_MESSAGE_CHARS)
    edit_right = forms.CharField(required=False, strip=False, max_length=chat.MAX_MESSAGE_CHARS)


class ChatMessageForm(forms.Form):
    text = forms.CharField(max_length=chat.MAX_MESSAGE_CHARS, error_messages={"required": "Write a message first."})


class ChatEndForm(forms.Form):
    rating = forms.TypedChoiceField(
        choices=[(1, "Bad"), (2, "Poor"), (3, "Good"), (4, "Very good")],
        coerce=int,
        error_messages={"required": "Rate the conversation from 1 (bad) to 4 (good)."},
    )
    comment = forms.CharField(required=False, max_length=chat.MAX_COMMENT_CHARS)
