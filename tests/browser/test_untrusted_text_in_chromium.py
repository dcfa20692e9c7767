"""Untrusted text never runs in a page: imported transcripts, chat messages, rationales, model
names and round errors carrying script payloads are shown as text in real Chromium, and were one
ever written into a page as markup, the Content-Security-Policy would still refuse to run it."""

import json

import pytest
from playwright.sync_api import expect

from preference_app.api.imports import preferences_import
from preference_app.core.models import Candidate, Comparison, Conversation, ModelVersion, TrainingRound, Turn
from preference_app.core.services import judgment_submit
from tests.browser.conftest import csp_violations_recorded, log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

IMAGE = '<img src=x onerror="window.__xss=1">'
SCRIPT = "<script>window.__xss=2</script>"
SVG = '"><svg onload="window.__xss=3">'


def nothing_ran(page) -> None:
    """No payload ran, and none became an element: the dashboard's own charts are images, so the
    check looks for the payloads' handlers and script text rather than for any image at all."""
    assert page.evaluate("typeof window.__xss") == "undefined"
    assert page.locator("[onerror], [onload]").count() == 0
    assert page.evaluate("[...document.scripts].some(s => s.text.includes('__xss'))") is False


def test_an_imported_transcript_with_payloads_is_shown_as_text(page, annotator, tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps({"chosen": f"\n\nHuman: {SVG}\n\nAssistant: {IMAGE}",
                                "rejected": f"\n\nHuman: {SVG}\n\nAssistant: {SCRIPT}"}) + "\n")
    preferences_import(path=path, file_format="hh")
    # An imported pair arrives judged once; a second opinion puts it in the annotators' queue.
    Comparison.objects.update(overlap_target=2)
    log_in(page, annotator.username)
    page.goto("/annotate/")
    expect(page.locator(".transcript .text")).to_have_text(SVG)
    assert set(page.locator(".reply .text").all_inner_texts()) == {IMAGE, SCRIPT}
    nothing_ran(page)


def test_a_prompt_written_into_the_page_as_markup_would_still_not_run(chromium, live_server, annotator, tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps({"chosen": f"\n\nHuman: {SCRIPT}{IMAGE}\n\nAssistant: Hi.",
                                "rejected": f"\n\nHuman: {SCRIPT}{IMAGE}\n\nAssistant: Hello."}) + "\n")
    preferences_import(path=path, file_format="hh")
    Comparison.objects.update(overlap_target=2)
    # A context of its own: the page fixture fails a test on any refusal, and here refusals are the point.
    context = chromium.new_context(base_url=live_server.url)
    page = context.new_page()
    refused = csp_violations_recorded(context)
    log_in(page, annotator.username)
    page.goto("/annotate/")
    prompt = page.locator(".transcript .text").inner_text()
    assert prompt == SCRIPT + IMAGE
    # What an escaping bug would do: parse the prompt as markup whose scripts and handlers may run.
    page.evaluate("text => document.body.append(document.createRange().createContextualFragment(text))", prompt)
    # The script is refused at once, the image's handler once its load has failed.
    for _ in range(50):
        if len(refused) >= 2:
            break
        page.wait_for_timeout(100)
    assert page.evaluate("typeof window.__xss") == "undefined"
    assert sorted(violation.split(" at ")[0] for violation in refused) == ["script-src-attr inline",
                                                                          "script-src-elem inline"]
    context.close()


def test_a_chat_message_with_payloads_is_shown_as_text(page, annotator, tiny_policy):
    log_in(page, annotator.username)
    page.goto("/annotate/chat/")
    page.locator("#chat-first-message").fill(IMAGE + SCRIPT)
    page.get_by_role("button", name="Start the conversation").click()
    expect(page.locator(".transcript")).to_contain_text(IMAGE + SCRIPT)
    nothing_ran(page)
    page.goto("/annotate/chat/")
    nothing_ran(page)


def test_rationales_model_names_and_round_errors_with_payloads_are_shown_as_text(page, admin_user, annotator):
    training_round = TrainingRound.objects.create(number=1, status="failed", failed_status="training_reward",
                                                  error=f"RuntimeError: {SCRIPT}{IMAGE}")
    version = ModelVersion.objects.create(name=f"policy {SVG}", kind="policy", path="/nowhere", base_model_id=IMAGE,
                                          training_round=training_round)
    judgment_submit(annotator=annotator, comparison=a_comparison(version, training_round), choice="a", strength=2,
                    left_candidate="a", rationale=SCRIPT + IMAGE)
    log_in(page, admin_user.username)
    page.goto("/rounds/")
    expect(page.locator("main")).to_contain_text(SCRIPT)
    nothing_ran(page)
    page.goto("/api/judgments/")
    expect(page.locator("body")).to_contain_text("window.__xss=2")
    nothing_ran(page)


def a_comparison(version, training_round) -> Comparison:
    conversation = Conversation.objects.create(source="prompt")
    Turn.objects.create(conversation=conversation, index=0, role="user", text=SVG)
    first, second = (Candidate.objects.create(conversation=conversation, context_length=1, text=text,
                                              model_version=version) for text in (IMAGE, SCRIPT))
    return Comparison.objects.create(conversation=conversation, context_length=1, candidate_a=first,
                                     candidate_b=second, training_round=training_round)


def test_a_markdown_reply_renders_its_list_and_bold_text_while_its_script_stays_inert(page, annotator):
    conversation = Conversation.objects.create(source="prompt")
    Turn.objects.create(conversation=conversation, index=0, role="user", text="How do I boil an egg?")
    markdown = f"**Two steps:**\n1. Boil water\n2. Add the egg {SCRIPT}\n\n[more](javascript:window.__xss=4)"
    first, second = (Candidate.objects.create(conversation=conversation, context_length=1, text=text)
                     for text in (markdown, markdown))
    Comparison.objects.create(conversation=conversation, context_length=1, candidate_a=first, candidate_b=second)
    log_in(page, annotator.username)
    page.goto("/annotate/")
    left = page.locator(".reply-left .text")
    expect(left.locator("strong")).to_have_text("Two steps:")
    expect(left.locator("ol > li")).to_have_text(["Boil water", f"Add the egg {SCRIPT}"])
    expect(left.locator("a")).to_have_count(0)
    page.locator(".reply-left .raw-text summary").click()
    expect(page.locator("#reply-left-raw")).to_have_text(markdown)
    nothing_ran(page)
