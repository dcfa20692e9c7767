"""Round settings are validated once, when an admin starts a round."""

import pytest

from preference_app.core.services import InvalidInput
from preference_app.rounds.round_settings import AUTO_MAX_EPOCHS, PRESETS, RoundSettings, dpo_epochs_for


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


def test_every_preset_is_valid_and_the_dashboard_fills_the_form_with_it(client, admin_user):
    client.force_login(admin_user)
    for name, values in PRESETS.items():
        RoundSettings.from_dict(values)
        page = client.get(f"/rounds/?preset={name}").content.decode()
        assert f'name="prompts_per_round" value="{values["prompts_per_round"]}"' in page


def test_dpo_epochs_grow_for_small_data_and_stay_as_configured_for_large():
    settings_values = RoundSettings(batch_size=8, epochs=1)
    assert dpo_epochs_for(settings_values, 31) == AUTO_MAX_EPOCHS  # ceil(32 * 8 / 31) = 9, capped.
    assert dpo_epochs_for(settings_values, 128) == 2
    assert dpo_epochs_for(settings_values, 1000) == 1
    assert dpo_epochs_for(RoundSettings(auto_epochs=False, epochs=1), 31) == 1
