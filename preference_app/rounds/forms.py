"""The dashboard's start-round form, generated from RoundSettings so the two cannot drift apart."""

from __future__ import annotations

from dataclasses import Field, fields
from typing import Any

from django import forms

from preference_app.core.errors import InvalidInput
from preference_app.rounds.round_settings import ADVANCED, SETTING_GROUPS, RoundSettings


class RoundSettingsForm(forms.Form):
    """One field per setting, with its label, help, bounds and choices from RoundSettings.

    The form's own fields only shape the page (a select, a checkbox, a number box with min and
    max); every value is checked by RoundSettings alone, so the page, the admin and the API refuse
    the same things with the same words. An empty box keeps the setting's default, as in the API.
    """

    def __init__(self, data=None, *, preset: dict[str, Any] | None = None):
        super().__init__(data, initial={**RoundSettings().to_dict(), **(preset or {})}, auto_id="setting-%s",
                         label_suffix="")
        self.round_settings: RoundSettings | None = None
        for setting in fields(RoundSettings):
            self.fields[setting.name] = _form_field(setting)

    def clean(self):
        values = self.settings_values()
        # Each value on its own first, so that every bad one is marked beside its box at once.
        for name, value in values.items():
            try:
                RoundSettings.from_dict({name: value})
            except InvalidInput as error:
                self.add_error(name, str(error))
        if not self.errors:
            # Then together: some settings exclude others (an online policy step takes no LoRA).
            try:
                self.round_settings = RoundSettings.from_dict(values)
            except InvalidInput as error:
                self.add_error(None, str(error))
        return self.cleaned_data

    def settings_values(self) -> dict[str, Any]:
        """The submitted values as RoundSettings.from_dict takes them; empty boxes are left out."""
        values = {}
        for name, form_field in self.fields.items():
            value = self.cleaned_data.get(name)
            if isinstance(form_field, forms.BooleanField):
                values[name] = bool(value)
            elif value:
                values[name] = value
        return values

    def fieldsets(self) -> list[dict[str, Any]]:
        """The fields grouped by the step of the round they shape, in SETTING_GROUPS's order; the
        advanced group is folded away unless one of its values was refused."""
        groups = []
        for group in SETTING_GROUPS:
            bound = [self[setting.name] for setting in fields(RoundSettings) if setting.metadata["group"] == group]
            groups.append({"title": group, "fields": bound, "advanced": group == ADVANCED,
                           "has_errors": any(field.errors for field in bound)})
        return groups


def _form_field(setting: Field) -> forms.Field:
    label, help_text = setting.metadata["label"], setting.metadata["help"]
    kind = type(setting.default)
    if kind is bool:
        return forms.BooleanField(required=False, label=label, help_text=help_text)
    if setting.metadata.get("choices"):
        choices = [(choice, choice.replace("_", " ")) for choice in setting.metadata["choices"]]
        # A text field behind a select: a value outside the choices is refused by RoundSettings.
        return forms.CharField(required=False, label=label, help_text=help_text, widget=forms.Select(choices=choices))
    bound = setting.metadata["bound"]
    attrs = {"min": _number(bound.low), "max": _number(bound.high), "step": "1" if kind is int else "any"}
    return forms.CharField(required=False, label=label, help_text=help_text, widget=forms.NumberInput(attrs=attrs))


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)
