"""Annotating in a real browser: the keyboard alone, htmx swaps, escaped output, a live-chat turn."""

import pytest
from playwright.sync_api import expect

from preference_app.annotation.models import Assignment
from preference_app.core.models import Comparison, Conversation, Judgment
from tests.annotation.conftest import make_comparison
from tests.browser.conftest import log_in, screenshot

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

QUESTION = "My sourdough starter smells like nail polish remover. Is it ruined, and what should I do?"
CAREFUL = (
    "It is almost certainly fine. That acetone smell means the yeast and bacteria are hungry: they have eaten "
    "the flour and are producing ethyl acetate.\n\nWhat to do:\n1. Discard all but about 50 g of starter.\n"
    "2. Feed it equal weights of flour and water (for example 50 g each).\n3. Feed it twice a day for a few "
    "days, at room temperature.\n\nThe smell should turn yeasty and slightly sour within two or three feedings. "
    "Throw it away only if you see pink or orange streaks or fuzzy mould."
)
CURT = "Throw it out and buy a new one. Starters that smell like chemicals are contaminated and unsafe to eat."


def expected_choice(assignment, side):
    """The stored choice for a preference of the reply shown on `side`."""
    other = "b" if assignment.left_candidate == "a" else "a"
    return assignment.left_candidate if side == "left" else other


def test_an_annotator_judges_three_comparisons_with_the_keyboard_alone(page, annotator):
    comparisons = [make_comparison(prompt=QUESTION, reply_a=CAREFUL, reply_b=CURT)]
    comparisons += [make_comparison(prompt=f"Question number {n}?") for n in (2, 3)]
    log_in(page, annotator.username)
    page.goto("/annotate/")
    form = page.locator("#judge-form")
    expect(form).to_have_attribute("data-comparison-id", str(comparisons[0].pk))
    screenshot(page, "comparison-page.png")
    # A marker on window survives htmx swaps but not a full page load.
    page.evaluate("window.__sameDocument = true")

    # 1: "A is somewhat better", flagged unusable, with a reason typed after R and left with Escape.
    page.keyboard.press("3")
    assert page.evaluate("document.activeElement.id") == "preference-3"
    outline = page.evaluate("getComputedStyle(document.querySelector('label[for=preference-3]')).outlineStyle")
    assert outline == "solid", "the focused choice must show a visible focus ring"
    page.keyboard.press("n")
    page.keyboard.press("r")
    page.keyboard.type("Explains the cause and the fix.")
    page.keyboard.press("Escape")
    page.keyboard.press("Enter")
    expect(form).to_have_attribute("data-comparison-id", str(comparisons[1].pk))
    expect(page.get_by_role("status")).to_contain_text("Saved. Here is the next one.")

    # 2: "B is much better".
    page.keyboard.press("8")
    page.keyboard.press("Enter")
    expect(form).to_have_attribute("data-comparison-id", str(comparisons[2].pk))

    # 3: "About the same".
    page.keyboard.press("t")
    page.keyboard.press("Enter")
    expect(page.locator("#work-heading")).to_have_text("Nothing to judge right now")
    expect(page.locator("#judged-today")).to_have_text("3")
    assert page.evaluate("window.__sameDocument") is True, "the next comparison must swap in without a reload"

    judgments = {judgment.comparison_id: judgment for judgment in Judgment.objects.filter(annotator=annotator)}
    assignments = {a.comparison_id: a for a in Assignment.objects.filter(annotator=annotator)}
    first, second, third = (judgments[c.pk] for c in comparisons)
    assert (first.choice, first.strength, first.flags, first.rationale) == (
        expected_choice(assignments[comparisons[0].pk], "left"), 2, ["unusable"], "Explains the cause and the fix.")
    assert (second.choice, second.strength, second.flags) == (expected_choice(assignments[comparisons[1].pk], "right"), 4, [])
    assert (third.choice, third.strength) == ("tie", None)
    for comparison in comparisons:
        judgment, assignment = judgments[comparison.pk], assignments[comparison.pk]
        assert judgment.left_candidate == assignment.left_candidate
        assert 0 < judgment.seconds_spent < 60


def test_the_comparison_page_stacks_the_replies_on_a_narrow_screen(page, annotator):
    make_comparison(prompt=QUESTION, reply_a=CAREFUL, reply_b=CURT)
    page.set_viewport_size({"width": 390, "height": 844})
    log_in(page, annotator.username)
    page.goto("/annotate/")
    left, right = page.locator(".reply-left").bounding_box(), page.locator(".reply-right").bounding_box()
    assert right["y"] >= left["y"] + left["height"], "on a phone, response B sits below response A"
    screenshot(page, "comparison-page-narrow.png")


def test_markup_in_model_output_is_shown_as_text_and_never_runs(page, annotator):
    image = '<img src=x onerror="window.__xss=1">'
    script = "<script>window.__xss=2</script>"
    make_comparison(prompt="<b>bold?</b>", reply_a=image, reply_b=script)
    make_comparison(prompt="Second", reply_a=script + image, reply_b='"><svg onload="window.__xss=3">')
    log_in(page, annotator.username)
    page.goto("/annotate/")
    expect(page.locator(".reply .text")).to_have_count(2)
    assert set(page.locator(".reply .text").all_inner_texts()) == {image, script}
    assert page.locator(".transcript .text").inner_text() == "<b>bold?</b>"
    # The second pair arrives through an htmx swap, which runs scripts in the content it inserts.
    page.keyboard.press("x")
    page.keyboard.press("Enter")
    expect(page.locator(".reply-left .text, .reply-right .text").first).not_to_have_text(image)
    expect(page.locator("#judge-form")).to_have_attribute("data-comparison-id", str(Comparison.objects.last().pk))
    page.wait_for_timeout(300)
    assert page.evaluate("typeof window.__xss") == "undefined"
    assert page.locator("main img, main svg, main script").count() == 0


@pytest.mark.worker
def test_a_live_chat_turn_runs_through_the_worker_and_continues_with_the_chosen_reply(
    page, annotator, tiny_policy, celery_worker
):
    log_in(page, annotator.username)
    page.goto("/annotate/chat/")
    page.get_by_label("Your first message").fill("Hello! What should I cook tonight?")
    page.get_by_role("button", name="Start the conversation").click()
    expect(page.locator("#chat")).to_be_visible()
    # The worker's two replies arrive through htmx polling of the loading indicator.
    expect(page.locator("#judge-form")).to_be_visible(timeout=90_000)
    conversation = Conversation.objects.get(annotator=annotator)
    assert conversation.source == Conversation.Source.LIVE_CHAT
    screenshot(page, "live-chat-judging.png")
    # The stored text: the reply itself shows it rendered as markdown.
    left_text = page.locator("#reply-left-raw").text_content()
    page.keyboard.press("1")
    page.keyboard.press("Enter")
    expect(page.get_by_role("status")).to_contain_text("Saved. Write your next message.")
    expect(page.get_by_label("Your next message")).to_be_visible()

    judgment = Judgment.objects.get(annotator=annotator)
    assert judgment.comparison.source == Comparison.Source.LIVE_CHAT
    assert (judgment.strength, judgment.choice) == (4, judgment.left_candidate)
    assert judgment.seconds_spent > 0
    turns = list(conversation.turns.values_list("role", "text"))
    assert turns == [("user", "Hello! What should I cook tonight?"), ("assistant", left_text)]


def test_a_live_chat_reply_visibly_grows_before_it_is_complete(page, annotator, tiny_policy, celery_worker, settings):
    # Long replies: the tiny model then writes for a few seconds, long enough to watch them grow.
    settings.CHAT_MAX_NEW_TOKENS = 600
    log_in(page, annotator.username)
    page.goto("/annotate/chat/")
    page.get_by_label("Your first message").fill("Tell me a long story.")
    page.get_by_role("button", name="Start the conversation").click()
    drafts, judge_form = page.locator("#chat-drafts"), page.locator("#judge-form")
    seen = []
    for _ in range(600):
        if judge_form.count():
            break
        text = drafts.inner_text() if drafts.count() else ""
        if text.strip():
            seen.append(len(text))
        page.wait_for_timeout(100)
    expect(judge_form).to_be_visible()
    sizes = sorted(set(seen))
    final = max(len(page.locator(f"#reply-{side}-raw").text_content()) for side in ("left", "right"))
    print(f"draft sizes seen before the replies were complete: {sizes} (longest final reply {final} characters)")
    assert len(sizes) >= 3, seen
    assert sizes[0] < final / 2
