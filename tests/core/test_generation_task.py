"""The generation task, run by a real Celery worker on the configured broker with a tiny model."""

import pytest

from preference_app.core.generation import generation_batch_create, generation_batch_record, generation_batch_run
from preference_app.core.models import Candidate, Comparison, Conversation, GenerationBatch, ModelVersion, Prompt, Turn
from preference_app.core.prompts import conversation_start_from_prompt, prompt_create
from preference_app.core.tasks import generate_candidates
from tests.conftest import wait_for
from training.generate import GenerationConfig

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

PROMPTS = ["Give me a tip for sleeping better.", "What is a prime number?", "Write a two-line poem about tea."]


@pytest.fixture
def tiny_policy(tiny_model_dir):
    return ModelVersion.objects.create(
        name="tiny", kind=ModelVersion.Kind.POLICY, path=str(tiny_model_dir), base_model_id="tiny-random", is_serving=True
    )


def start_conversations():
    return [conversation_start_from_prompt(prompt=prompt_create(text=text, source=Prompt.Source.BUILTIN)[0]) for text in PROMPTS]


def finished(batch_id):
    batch = GenerationBatch.objects.get(pk=batch_id)
    return batch if batch.status in (GenerationBatch.Status.DONE, GenerationBatch.Status.FAILED) else None


def test_worker_turns_prompts_into_candidates_and_comparisons(celery_worker, tiny_policy):
    sampling = GenerationConfig(candidates_per_context=4, max_new_tokens=12, seed=7).to_dict()
    batch = generation_batch_create(model_version=tiny_policy, conversations=start_conversations(), sampling=sampling)
    batch = wait_for(lambda: finished(batch.pk), timeout=120, message="the generation batch")
    assert batch.status == GenerationBatch.Status.DONE, batch.error
    candidates = Candidate.objects.filter(model_version=tiny_policy)
    assert candidates.count() == len(PROMPTS) * 4
    assert all(0 < candidate.token_count <= 12 and candidate.sampling == sampling for candidate in candidates)
    assert all(candidate.generation_seconds > 0 for candidate in candidates)
    comparisons = Comparison.objects.all()
    assert comparisons.count() == len(PROMPTS) * 2
    for comparison in comparisons:
        assert comparison.candidate_a.conversation_id == comparison.candidate_b.conversation_id == comparison.conversation_id
        assert comparison.context_length == comparison.candidate_a.context_length == 1
    assert (batch.candidates_created, batch.comparisons_created) == (12, 6)


def test_a_duplicated_task_message_generates_the_batch_once(celery_worker, tiny_policy):
    sampling = GenerationConfig(candidates_per_context=2, max_new_tokens=6).to_dict()
    batch = generation_batch_create(model_version=tiny_policy, conversations=start_conversations()[:1], sampling=sampling)
    duplicates = [generate_candidates.delay(batch.pk), generate_candidates.delay(batch.pk)]
    outcomes = [result.get(timeout=120) for result in duplicates]
    assert all(outcome["status"] == GenerationBatch.Status.DONE for outcome in outcomes)
    assert Candidate.objects.filter(conversation__in=batch.conversations.all()).count() == 2
    assert Comparison.objects.count() == 1


def test_an_unloadable_model_fails_the_batch_with_a_readable_error(celery_worker, db, tmp_path):
    broken = ModelVersion.objects.create(
        name="missing", kind=ModelVersion.Kind.POLICY, path=str(tmp_path / "nowhere"), base_model_id="none"
    )
    batch = generation_batch_create(
        model_version=broken, conversations=start_conversations()[:1], sampling=GenerationConfig(max_new_tokens=4).to_dict()
    )
    batch = wait_for(lambda: finished(batch.pk), timeout=60, message="the generation batch to fail")
    assert batch.status == GenerationBatch.Status.FAILED
    assert "Could not load the model" in batch.error
    assert Candidate.objects.count() == 0


def test_a_live_chat_batch_keeps_its_replies_so_far_and_a_prompt_batch_only_its_share_done(tiny_policy, annotator):
    chat_conversation = Conversation.objects.create(source=Conversation.Source.LIVE_CHAT, annotator=annotator)
    Turn.objects.create(conversation=chat_conversation, index=0, role=Turn.Role.USER, text="Hello?")
    sampling = GenerationConfig(candidates_per_context=2, max_new_tokens=40, seed=3).to_dict()
    chat_batch = generation_batch_record(model_version=tiny_policy, conversations=[chat_conversation], sampling=sampling)
    prompt_batch = generation_batch_record(model_version=tiny_policy, conversations=start_conversations(),
                                           sampling=sampling)
    fractions = []
    for batch in (chat_batch, prompt_batch):
        generation_batch_run(batch_id=batch.pk, on_fraction=fractions.append)
    chat_batch.refresh_from_db()
    prompt_batch.refresh_from_db()
    assert (chat_batch.status, chat_batch.progress, prompt_batch.status, prompt_batch.progress) == ("done", 1.0, "done", 1.0)
    replies = list(Candidate.objects.filter(conversation=chat_conversation).order_by("id").values_list("text", flat=True))
    assert len(chat_batch.partial_replies) == 2
    assert all(reply.startswith(partial) for reply, partial in zip(replies, chat_batch.partial_replies))
    assert prompt_batch.partial_replies == []
    assert fractions[-1] == 1.0 and min(fractions) < 0.5
