"""The frozen evaluation set, chosen once, hashed, recorded on rounds and never trained on; and the
other pairs kept out of training (flagged ones)."""

import json

import pytest

from preference_app.api.imports import preferences_import
from preference_app.core import roles
from preference_app.core.errors import InvalidInput
from preference_app.core.models import Demonstration, EvaluationSet, Judgment, Prompt
from preference_app.core.prompts import builtin_prompts_load, text_sha256
from preference_app.rounds import selectors, services
from preference_app.rounds.evaluation_sets import (
    BUILTIN_EVALUATION_FILE,
    content_sha256,
    evaluation_set_active_ensure,
    evaluation_set_create,
    evaluation_set_from_file,
)
from tests.conftest import make_user

pytestmark = pytest.mark.django_db

BUILTIN_TEXTS = [json.loads(line)["text"] for line in BUILTIN_EVALUATION_FILE.read_text().splitlines()]


def hh_line(prompt: str, chosen: str, rejected: str) -> str:
    return json.dumps({"chosen": f"\n\nHuman: {prompt}\n\nAssistant: {chosen}",
                       "rejected": f"\n\nHuman: {prompt}\n\nAssistant: {rejected}"})


def test_the_builtin_set_is_frozen_once_with_the_hash_of_its_exact_prompts():
    first = evaluation_set_active_ensure()
    again = evaluation_set_active_ensure()
    assert first.pk == again.pk and EvaluationSet.objects.count() == 1
    assert len(first.prompts) == 50 and first.prompts == BUILTIN_TEXTS
    assert first.content_sha256 == content_sha256(BUILTIN_TEXTS)
    assert first.prompt_sha256s == [text_sha256(text) for text in BUILTIN_TEXTS]


def test_a_round_records_the_evaluation_set_it_is_judged_on():
    training_round = services.round_start(settings_values={"evaluation_prompts": 20})
    evaluation_set = EvaluationSet.objects.get(is_active=True)
    assert training_round.evaluation_set == evaluation_set
    assert training_round.metrics["evaluation_set"] == {
        "version": evaluation_set.version, "sha256": evaluation_set.content_sha256, "prompts": 20}


def test_a_file_makes_a_new_active_version_and_the_old_prompts_stay_out_of_training(tmp_path):
    builtin = evaluation_set_active_ensure()
    path = tmp_path / "mine.jsonl"
    path.write_text(json.dumps({"text": "Our own question?"}) + "\n")
    mine = evaluation_set_from_file(path=path)
    assert (mine.version, mine.is_active) == (builtin.version + 1, True)
    assert not EvaluationSet.objects.get(pk=builtin.pk).is_active
    Prompt.objects.create(text=BUILTIN_TEXTS[0], text_sha256=text_sha256(BUILTIN_TEXTS[0]), source="imported")
    Prompt.objects.create(text="Our own question?", text_sha256=text_sha256("Our own question?"), source="imported")
    Prompt.objects.create(text="A training prompt.", text_sha256=text_sha256("A training prompt."), source="imported")
    assert [prompt.text for prompt in selectors.prompts_for_generation(limit=10)] == ["A training prompt."]


@pytest.mark.parametrize(("texts", "message"), [
    ([], "at least one prompt"),
    (["Same?", "Same?"], "same prompt twice"),
    (["Fine.", "   "], "Prompt 2 of the evaluation set is empty"),
])
def test_a_bad_evaluation_set_is_refused_and_nothing_is_stored(texts, message):
    with pytest.raises(InvalidInput, match=message):
        evaluation_set_create(name="bad", texts=texts)
    assert not EvaluationSet.objects.exists()


def test_evaluation_prompts_never_enter_generation_reward_dpo_or_sft_data_even_after_an_import(tmp_path):
    evaluation_set_active_ensure()
    builtin_prompts_load()
    leaked = BUILTIN_TEXTS[3]
    path = tmp_path / "hh.jsonl"
    path.write_text("\n".join([hh_line(leaked, "A good answer.", "A bad one."),
                               hh_line("What is 2+2?", "4.", "5.")]) + "\n")
    preferences_import(path=path, file_format="hh")
    assert Prompt.objects.filter(text=leaked).exists()  # The import stored it as a prompt ...

    generation = selectors.prompts_for_generation(limit=1000)
    assert generation and leaked not in {prompt.text for prompt in generation}  # ... but it is never sampled,
    train, held_out = selectors.preference_pairs(held_out_split=True)
    everything = train + held_out
    assert [pair.prompt[0]["content"] for pair in everything] == ["What is 2+2?"]  # ... nor trained on.
    conversation = Prompt.objects.get(text=leaked).conversations.get()
    Demonstration.objects.create(conversation=conversation, context_length=1, text="An ideal reply.",
                                 author=make_user("writer", roles.ANNOTATOR))
    assert selectors.demonstrations_for_sft() == []


def test_the_held_out_split_keeps_every_comparison_of_a_prompt_on_one_side(tmp_path):
    evaluation_set_active_ensure()
    prompts = [f"Question number {number}?" for number in range(60)]
    lines = [hh_line(prompt, f"Good {variant}.", f"Bad {variant}.") for prompt in prompts for variant in range(3)]
    path = tmp_path / "hh.jsonl"
    path.write_text("\n".join(lines) + "\n")
    preferences_import(path=path, file_format="hh")
    train, held_out = selectors.preference_pairs(held_out_split=True)
    train_prompts = {pair.prompt[0]["content"] for pair in train}
    held_out_prompts = {pair.prompt[0]["content"] for pair in held_out}
    assert len(train) + len(held_out) == 180
    assert held_out_prompts and not (train_prompts & held_out_prompts)
    assert len(held_out) == 3 * len(held_out_prompts)


def test_a_comparison_anyone_flagged_never_trains_the_reward_model_or_the_policy(tmp_path):
    path = tmp_path / "hh.jsonl"
    path.write_text("\n".join([hh_line("Is this fine?", "Yes.", "No."), hh_line("And this?", "Sure.", "Nope.")]) + "\n")
    preferences_import(path=path, file_format="hh")
    Judgment.objects.filter(comparison__conversation__turns__text="And this?").update(flags=["unsafe"])
    train, held_out = selectors.preference_pairs(held_out_split=True)
    assert [pair.prompt[0]["content"] for pair in train + held_out] == ["Is this fine?"]
