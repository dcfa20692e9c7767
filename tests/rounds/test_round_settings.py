"""Round settings are validated once, when an admin starts a round."""

import pytest

from preference_app.core.services import InvalidInput
from preference_app.rounds.round_settings import RoundSettings


def test_form_strings_are_coerced_to_the_right_types():
    settings = RoundSettings.from_dict({"beta": "0.2", "prompts_per_round": "12", "head_to_head": "false"})
    assert (settings.beta, settings.prompts_per_round, settings.head_to_head) == (0.2, 12, False)


@pytest.mark.parametrize(
    "values, message",
    [
        ({"beta": "strong"}, "beta must be a float"),
        ({"candidates_per_prompt": 1}, "at least 2"),
        ({"reference": "yesterday"}, "reference must be one of"),
        ({"learning_rate": 3}, "between 0 and 1"),
        ({"colour": "blue"}, "Unknown round settings: colour"),
        ({"prompts_per_round": 0}, "prompts_per_round must be at least 1"),
    ],
)
def test_nonsense_is_rejected_with_a_clear_message(values, message):
    with pytest.raises(InvalidInput, match=message):
        RoundSettings.from_dict(values)


def test_settings_survive_a_round_trip_through_json():
    settings = RoundSettings(beta=0.3, reference="previous", lora_rank=8)
    assert RoundSettings.from_dict(settings.to_dict()) == settings
