"""Live chat: messages, two generated replies judged in place, edits, regeneration and the end.

Generation runs in this process through the same service the Celery task calls, with a tiny model;
tests/annotation/test_chat_worker.py runs a turn through a real worker.
"""

import pytest
import torch
from django.urls import reverse

from preference_app.annotation import selectors
from preference_app.annotation.chat import (
    ChatState,
    chat_end,
    chat_judge,
    chat_message_send,
    chat_start,
    chat_state,
)
from preference_app.core.errors import InvalidInput
from preference_app.core.generation import generation_batch_run
from preference_app.core.models import (
    Candidate,
    Comparison,
    Conversation,
    Demonstration,
    GenerationBatch,
    Judgment,
    ModelVersion,
)
from tests.conftest import make_user
from training.checkpoints import ModelUnavailable

HTMX = {"HTTP_HX_REQUEST": "true"}


def replies_arrive(conversation):
    """Do what the worker does for the chat's latest generation request."""
    batch = selectors.chat_latest_batch(conversation=conversation)
    assert batch.status == GenerationBatch.Status.PENDING
    generation_batch_run(batch_id=batch.pk)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Generate on one thread: on a busy two-core machine, two threads spin against other processes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def chat(annotator, tiny_policy):
    conversation = chat_start(annotator=annotator, text="Tell me a fact about owls.")
    replies_arrive(conversation)
    return conversation


def judging(annotator, conversation) -> ChatState:
    state = chat_state(annotator=annotator, conversation=conversation)
    assert state.phase == ChatState.JUDGING
    return state


def test_a_first_message_starts_a_live_chat_and_requests_two_replies(annotator, tiny_policy):
    conversation = chat_start(annotator=annotator, text="  Hello there  ")
    assert (conversation.source, conversation.annotator) == (Conversation.Source.LIVE_CHAT, annotator)
    assert list(conversation.turns.values_list("role", "text")) == [("user", "Hello there")]
    batch = selectors.chat_latest_batch(conversation=conversation)
    assert batch.model_version == tiny_policy and batch.sampling["candidates_per_context"] == 2
    assert chat_state(annotator=annotator, conversation=conversation).phase == ChatState.GENERATING


def test_without_a_serving_policy_the_chat_explains_why_nothing_happens(annotator, db):
    with pytest.raises(InvalidInput, match="No policy is serving"):
        chat_start(annotator=annotator, text="Hello")
    assert Conversation.objects.count() == 0


def test_arrived_replies_become_a_live_chat_comparison_served_to_the_chatter(annotator, chat):
    state = judging(annotator, chat)
    comparison = state.pair.comparison
    assert comparison.source == Comparison.Source.LIVE_CHAT and comparison.context_length == 1
    assert {state.pair.left, state.pair.right} == {comparison.candidate_a, comparison.candidate_b}
    again = chat_state(annotator=annotator, conversation=chat)
    assert again.pair.assignment.pk == state.pair.assignment.pk and again.pair.left == state.pair.left


def test_the_preferred_reply_continues_the_conversation(annotator, chat):
    state = judging(annotator, chat)
    outcome = chat_judge(annotator=annotator, conversation=chat, comparison_id=state.pair.comparison.pk, preference="7")
    assert outcome.created and not outcome.edited
    judgment = Judgment.objects.get()
    assert (judgment.strength, judgment.left_candidate) == (3, state.pair.assignment.left_candidate)
    assert list(chat.turns.values_list("role", "text")) == [
        ("user", "Tell me a fact about owls."),
        ("assistant", state.pair.right.text),
    ]
    assert chat_state(annotator=annotator, conversation=chat).phase == ChatState.WRITING


def test_about_the_same_continues_with_the_reply_on_the_left(annotator, chat):
    state = judging(annotator, chat)
    chat_judge(annotator=annotator, conversation=chat, comparison_id=state.pair.comparison.pk, preference="tie")
    assert chat.turns.last().text == state.pair.left.text


def test_an_edit_continues_the_conversation_and_is_kept_as_preferred_and_as_a_demonstration(annotator, chat):
    state = judging(annotator, chat)
    outcome = chat_judge(
        annotator=annotator,
        conversation=chat,
        comparison_id=state.pair.comparison.pk,
        preference="both_bad",
        edit_left=state.pair.left.text,  # Unchanged: not an edit.
        edit_right="Owls can turn their heads\r\nabout 270 degrees.",
    )
    assert outcome.edited and not outcome.regenerating
    edited = Candidate.objects.get(edited_from=state.pair.right)
    assert (edited.text, edited.author, edited.model_version) == ("Owls can turn their heads\nabout 270 degrees.", annotator, None)
    edit_comparison = Comparison.objects.get(source=Comparison.Source.EDIT)
    assert (edit_comparison.candidate_a, edit_comparison.candidate_b) == (edited, state.pair.right)
    assert edit_comparison.judgments.get().choice == "a" and edit_comparison.judgments.get().strength == 4
    demonstration = Demonstration.objects.get()
    assert (demonstration.candidate, demonstration.context_length, demonstration.author) == (edited, 1, annotator)
    assert chat.turns.last().text == edited.text
    assert Judgment.objects.get(comparison=state.pair.comparison).choice == "both_bad"


def test_editing_both_replies_at_once_is_refused_and_stores_nothing(annotator, chat):
    state = judging(annotator, chat)
    with pytest.raises(InvalidInput, match="not both"):
        chat_judge(
            annotator=annotator, conversation=chat, comparison_id=state.pair.comparison.pk, preference="1",
            edit_left="One.", edit_right="Two.",
        )
    assert Judgment.objects.count() == 0 and chat.turns.count() == 1


def test_both_bad_without_an_edit_asks_for_two_new_replies(annotator, chat):
    state = judging(annotator, chat)
    outcome = chat_judge(annotator=annotator, conversation=chat, comparison_id=state.pair.comparison.pk, preference="both_bad")
    assert outcome.regenerating
    assert chat_state(annotator=annotator, conversation=chat).phase == ChatState.GENERATING
    replies_arrive(chat)
    fresh = judging(annotator, chat)
    assert fresh.pair.comparison != state.pair.comparison and fresh.pair.comparison.context_length == 1
    batches = GenerationBatch.objects.filter(conversations=chat).order_by("id")
    assert batches[0].sampling["seed"] != batches[1].sampling["seed"]


def test_a_second_judgment_of_the_same_replies_changes_nothing(annotator, chat):
    state = judging(annotator, chat)
    chat_judge(annotator=annotator, conversation=chat, comparison_id=state.pair.comparison.pk, preference="1")
    again = chat_judge(annotator=annotator, conversation=chat, comparison_id=state.pair.comparison.pk, preference="8")
    assert not again.created
    assert chat.turns.count() == 2 and Judgment.objects.count() == 1


def test_the_next_message_waits_for_the_assistant_reply(annotator, chat):
    with pytest.raises(InvalidInput, match="not replied"):
        chat_message_send(conversation=chat, text="Another?")
    state = judging(annotator, chat)
    chat_judge(annotator=annotator, conversation=chat, comparison_id=state.pair.comparison.pk, preference="4")
    chat_message_send(conversation=chat, text="Another?")
    assert chat.turns.last().index == 2 and chat_state(annotator=annotator, conversation=chat).phase == ChatState.GENERATING


def test_ending_records_the_rating_and_comment_once(annotator, chat):
    assert chat_end(conversation=chat, rating=3, comment=" Fine. ")
    assert not chat_end(conversation=chat, rating=1)
    chat.refresh_from_db()
    assert (chat.overall_rating, chat.comment, chat.ended is not None) == (3, "Fine.", True)
    with pytest.raises(InvalidInput, match="1 \\(bad\\) to 4"):
        chat_end(conversation=chat, rating=5)


# Views -----------------------------------------------------------------------------------------


def test_the_chat_page_works_as_plain_forms(client, annotator, tiny_policy):
    client.force_login(annotator)
    response = client.post(reverse("annotation:chat_list"), {"text": "What is rain?"})
    conversation = Conversation.objects.get()
    assert response.status_code == 302 and response.url == reverse("annotation:chat_detail", args=[conversation.pk])
    page = client.get(response.url).content.decode()
    assert "The model is writing two replies" in page and 'http-equiv="refresh"' in page
    replies_arrive(conversation)
    page = client.get(response.url).content.decode()
    comparison = Comparison.objects.get()
    assert 'id="judge-form"' in page and 'name="edit_left"' in page
    judged = client.post(reverse("annotation:chat_judge", args=[conversation.pk, comparison.pk]), {"preference": "2"})
    assert judged.status_code == 302
    assert conversation.turns.count() == 2
    assert "Write your next message" in client.get(judged.url).content.decode()


def test_polling_while_replies_are_written_answers_no_content_until_they_arrive(client, annotator, tiny_policy):
    client.force_login(annotator)
    client.post(reverse("annotation:chat_list"), {"text": "What is rain?"})
    conversation = Conversation.objects.get()
    poll = reverse("annotation:chat_detail", args=[conversation.pk]) + "?unless=generating"
    assert client.get(poll, **HTMX).status_code == 204
    replies_arrive(conversation)
    response = client.get(poll, **HTMX)
    html = response.content.decode()
    assert response.status_code == 200 and html.lstrip().startswith('<section id="chat"')
    assert 'id="judge-form"' in html and "chat-replies-done" not in html


def test_the_drafts_poll_shows_the_replies_so_far_then_says_they_are_done(client, annotator, tiny_policy):
    client.force_login(annotator)
    client.post(reverse("annotation:chat_list"), {"text": "What is rain?"})
    conversation = Conversation.objects.get()
    drafts = reverse("annotation:chat_drafts", args=[conversation.pk])
    GenerationBatch.objects.filter(conversations=conversation).update(
        status="running", partial_replies=["Rain is **water**", "Rain falls <script>x</script>"])
    html = client.get(drafts, **HTMX).content.decode()
    assert html.count('class="reply draft"') == 2
    assert "Rain is <strong>water</strong>" in html and "&lt;script&gt;x&lt;/script&gt;" in html
    GenerationBatch.objects.filter(conversations=conversation).update(status="pending")
    replies_arrive(conversation)
    done = client.get(drafts, **HTMX)
    assert done.status_code == 204 and done["HX-Trigger"] == "chat-replies-done"


def test_an_htmx_message_returns_the_chat_with_a_polling_loading_indicator(client, annotator, chat):
    client.force_login(annotator)
    state = judging(annotator, chat)
    client.post(reverse("annotation:chat_judge", args=[chat.pk, state.pair.comparison.pk]), {"preference": "1"}, **HTMX)
    response = client.post(reverse("annotation:chat_message", args=[chat.pk]), {"text": "And bats?"}, **HTMX)
    html = response.content.decode()
    assert 'hx-trigger="every 5s, chat-replies-done"' in html and "The model is writing two replies" in html
    assert reverse("annotation:chat_drafts", args=[chat.pk]) in html
    assert "And bats?" in html


def test_ending_through_the_page_needs_a_rating(client, annotator, chat):
    client.force_login(annotator)
    url = reverse("annotation:chat_end", args=[chat.pk])
    assert "Rate the conversation" in client.post(url, {"comment": "ok"}, **HTMX).content.decode()
    html = client.post(url, {"rating": "4", "comment": "Lovely <b>owls</b>"}, **HTMX).content.decode()
    assert "4 of 4" in html and "Lovely &lt;b&gt;owls&lt;/b&gt;" in html


def test_another_annotators_chat_is_not_found(client, chat):
    client.force_login(make_user("ann2", "annotator"))
    assert client.get(reverse("annotation:chat_detail", args=[chat.pk])).status_code == 404


def test_a_failed_generation_can_be_retried(client, annotator, db, tmp_path):
    ModelVersion.objects.create(
        name="broken", kind=ModelVersion.Kind.POLICY, path=str(tmp_path / "nowhere"), base_model_id="none", is_serving=True
    )
    conversation = chat_start(annotator=annotator, text="Hi")
    with pytest.raises(ModelUnavailable):
        replies_arrive(conversation)
    client.force_login(annotator)
    page = client.get(reverse("annotation:chat_detail", args=[conversation.pk])).content.decode()
    assert "The model could not write replies" in page and "Could not load the model" in page
    client.post(reverse("annotation:chat_retry", args=[conversation.pk]))
    assert GenerationBatch.objects.filter(conversations=conversation).count() == 2
    assert chat_state(annotator=annotator, conversation=conversation).phase == ChatState.GENERATING
