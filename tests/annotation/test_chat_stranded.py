"""A live chat whose reply request was stranded (its message lost, or its worker dead) offers a retry
that works: the stranded request is failed, so it can never generate twice, and one new one is made."""

from datetime import timedelta

from django.urls import reverse
from django.utils import timezone

from preference_app.annotation import selectors
from preference_app.annotation.chat import ChatState, chat_start, chat_state
from preference_app.core.models import GenerationBatch

STILL_WAITING = "This is taking longer than it should"


def test_a_chat_whose_request_was_lost_offers_a_retry_that_asks_again_once(client, annotator, tiny_policy, settings):
    conversation = chat_start(annotator=annotator, text="Tell me about owls.")
    lost = selectors.chat_latest_batch(conversation=conversation)
    client.force_login(annotator)
    page = reverse("annotation:chat_detail", args=[conversation.pk])
    assert STILL_WAITING not in client.get(page).content.decode()

    GenerationBatch.objects.filter(pk=lost.pk).update(
        enqueued=timezone.now() - timedelta(seconds=settings.WORK_REQUEUE_SECONDS + 1)
    )
    assert STILL_WAITING in client.get(page).content.decode()
    client.post(reverse("annotation:chat_retry", args=[conversation.pk]))
    client.post(reverse("annotation:chat_retry", args=[conversation.pk]))
    lost.refresh_from_db()
    assert lost.status == "failed"
    batches = GenerationBatch.objects.filter(conversations=conversation)
    assert sorted(batches.values_list("status", flat=True)) == ["failed", "pending"]
    state = chat_state(annotator=annotator, conversation=conversation)
    assert (state.phase, state.stranded) == (ChatState.GENERATING, False)


def test_a_chat_whose_worker_died_mid_reply_offers_a_retry(client, annotator, tiny_policy):
    conversation = chat_start(annotator=annotator, text="Tell me about bats.")
    GenerationBatch.objects.filter(conversations=conversation).update(
        status="running", claimed=timezone.now(), claimed_by="another-host:1:1.00"
    )
    client.force_login(annotator)
    assert STILL_WAITING not in client.get(reverse("annotation:chat_detail", args=[conversation.pk])).content.decode()
    GenerationBatch.objects.filter(conversations=conversation).update(claimed=timezone.now() - timedelta(hours=1))
    assert chat_state(annotator=annotator, conversation=conversation).stranded
    client.post(reverse("annotation:chat_retry", args=[conversation.pk]))
    assert GenerationBatch.objects.filter(conversations=conversation, status="pending").count() == 1


def test_a_retry_while_replies_are_still_on_their_way_changes_nothing(client, annotator, tiny_policy):
    conversation = chat_start(annotator=annotator, text="Tell me about cats.")
    client.force_login(annotator)
    client.post(reverse("annotation:chat_retry", args=[conversation.pk]))
    assert list(GenerationBatch.objects.filter(conversations=conversation).values_list("status", flat=True)) == [
        "pending"
    ]
