"""The comparison page, its judgment and skip posts, with and without htmx."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from preference_app.annotation.models import Assignment
from preference_app.core import roles
from preference_app.core.models import Candidate, Conversation, Judgment
from tests.annotation.conftest import make_comparison
from tests.conftest import make_user

HTMX = {"HTTP_HX_REQUEST": "true"}
PAGE = reverse("annotation:compare")


@pytest.fixture
def client_of(client):
    def log_in(user):
        client.force_login(user)
        return client

    return log_in


def judge_url(comparison):
    return reverse("annotation:judge", args=[comparison.pk])


def test_anonymous_visitors_are_sent_to_the_login_page(client, db):
    response = client.get(PAGE)
    assert response.status_code == 302 and response.url.startswith(reverse("login"))


def test_a_researcher_may_not_annotate(client_of, researcher):
    assert client_of(researcher).get(PAGE).status_code == 403


def test_admins_and_superusers_may_annotate(client_of, admin_user, comparisons):
    assert client_of(admin_user).get(PAGE).status_code == 200
    superuser = make_user("root", None, is_superuser=True)
    assert client_of(superuser).get(PAGE).status_code == 200


def test_the_page_shows_the_context_both_replies_on_their_sides_and_progress(client_of, annotator, db):
    comparison = make_comparison(prompt="Name a prime.", reply_a="Seven.", reply_b="Nine.")
    response = client_of(annotator).get(PAGE)
    html = response.content.decode()
    assignment = Assignment.objects.get()
    left, right = ("Seven.", "Nine.") if assignment.left_candidate == "a" else ("Nine.", "Seven.")
    assert html.index(left) < html.index(right)
    assert "Name a prime." in html
    assert f'data-comparison-id="{comparison.pk}"' in html
    assert '<dd id="queue-waiting">0</dd>' in html  # The one comparison is leased to this annotator.
    assert 'hx-post="' + judge_url(comparison) + '"' in html
    assert all(f'id="preference-{value}"' in html for value in ["1", "2", "3", "4", "5", "6", "7", "8", "tie", "both_bad"])


def test_model_output_is_escaped_not_rendered(client_of, annotator, db):
    make_comparison(reply_a='<img src=x onerror="window.__xss=1">', reply_b="<script>window.__xss=2</script>")
    html = client_of(annotator).get(PAGE).content.decode()
    assert "<script>window.__xss" not in html and "<img src=x" not in html
    assert "&lt;script&gt;window.__xss=2&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=&quot;window.__xss=1&quot;&gt;" in html


def test_replies_render_markdown_and_keep_their_raw_text_one_click_away(client_of, annotator, db):
    make_comparison(reply_a="Steps:\n1. **Boil** water\n2. Add the egg", reply_b="- *soft*\n- hard")
    html = client_of(annotator).get(PAGE).content.decode()
    assert "<strong>Boil</strong>" in html and "<li>Add the egg</li>" in html
    assert "<em>soft</em>" in html
    assert "<summary>Raw text</summary>" in html and "1. **Boil** water" in html


def test_a_reply_cut_at_the_token_limit_is_marked_and_a_finished_one_is_not(client_of, annotator, db):
    comparison = make_comparison(reply_a="Are you prepared to", reply_b="Yes.")
    Candidate.objects.filter(pk=comparison.candidate_a_id).update(finished_with_eos=False, token_count=160)
    html = client_of(annotator).get(PAGE).content.decode()
    assert html.count("Cut off at 160 tokens") == 1
    side = "left" if Assignment.objects.get().left_candidate == "a" else "right"
    assert f'id="reply-{side}-cut-off"' in html


def test_a_plain_form_post_stores_the_judgment_and_redirects_to_the_next(client_of, annotator, comparisons):
    client = client_of(annotator)
    client.get(PAGE)
    response = client.post(judge_url(comparisons[0]), {"preference": "tie", "rationale": "Same.", "flags": ["unusable"]})
    assert response.status_code == 302 and response.url == PAGE
    judgment = Judgment.objects.get()
    assert (judgment.choice, judgment.strength, judgment.rationale, judgment.flags) == ("tie", None, "Same.", ["unusable"])
    follow = client.get(PAGE)
    assert "Saved. Here is the next one." in follow.content.decode()
    assert Assignment.objects.get(annotator=annotator, status="open").comparison == comparisons[1]


def test_an_htmx_post_answers_with_the_next_comparison_only(client_of, annotator, comparisons):
    client = client_of(annotator)
    client.get(PAGE)
    response = client.post(judge_url(comparisons[0]), {"preference": "8"}, **HTMX)
    html = response.content.decode()
    assert response.status_code == 200
    assert html.lstrip().startswith('<section id="work"')
    assert f'data-comparison-id="{comparisons[1].pk}"' in html
    assert '<dd id="judged-today">1</dd>' in html and '<dd id="judged-total">1</dd>' in html


def test_a_double_submit_keeps_the_first_answer_and_says_so_calmly(client_of, annotator, comparisons):
    client = client_of(annotator)
    client.get(PAGE)
    client.post(judge_url(comparisons[0]), {"preference": "1"}, **HTMX)
    response = client.post(judge_url(comparisons[0]), {"preference": "5"}, **HTMX)
    assert "You had already judged that comparison; your first answer is kept." in response.content.decode()
    assert list(Judgment.objects.values_list("strength", flat=True)) == [4]


def test_a_post_without_a_choice_shows_the_same_comparison_with_an_error(client_of, annotator, comparisons):
    client = client_of(annotator)
    client.get(PAGE)
    response = client.post(judge_url(comparisons[0]), {"rationale": "Hmm"}, **HTMX)
    html = response.content.decode()
    assert "Choose a point on the scale" in html
    assert f'data-comparison-id="{comparisons[0].pk}"' in html
    assert ">Hmm</textarea>" in html
    assert Judgment.objects.count() == 0


def test_judging_a_comparison_someone_else_holds_is_refused(client_of, annotator, comparisons):
    make_user("ann2", roles.ANNOTATOR)
    response = client_of(annotator).post(judge_url(comparisons[2]), {"preference": "1"}, **HTMX)
    assert "was not given to you" in response.content.decode()
    assert Judgment.objects.count() == 0


def test_skip_moves_on_and_never_shows_the_comparison_again(client_of, annotator, comparisons):
    client = client_of(annotator)
    client.get(PAGE)
    response = client.post(reverse("annotation:skip", args=[comparisons[0].pk]), **HTMX)
    assert f'data-comparison-id="{comparisons[1].pk}"' in response.content.decode()
    assert Assignment.objects.get(comparison=comparisons[0]).status == Assignment.Status.SKIPPED


def test_an_empty_queue_says_so_and_polls_for_new_work(client_of, annotator):
    html = client_of(annotator).get(PAGE).content.decode()
    assert "Nothing to judge right now" in html and 'hx-trigger="every 20s"' in html


def test_the_guidelines_are_linked_from_every_page(client, client_of, annotator, comparisons):
    guidelines = reverse("annotation:guidelines")
    assert f'href="{guidelines}"' in client.get(reverse("login")).content.decode()
    assert "helpful" in client.get(guidelines).content.decode()
    client = client_of(annotator)
    for url in [reverse("home"), PAGE, reverse("annotation:chat_list")]:
        assert f'href="{guidelines}"' in client.get(url).content.decode(), url


def test_htmx_comes_from_the_bundled_script(client_of, annotator):
    html = client_of(annotator).get(PAGE).content.decode()
    assert "django_htmx/htmx-2.min.js" in html and "unpkg" not in html


def test_the_page_costs_as_many_queries_for_a_long_conversation_as_for_a_short_one(client_of, db):
    long_chat = Conversation.objects.create(source=Conversation.Source.PROMPT)
    for index in range(7):
        long_chat.turns.create(index=index, role="user" if index % 2 == 0 else "assistant", text=f"Turn {index}.")
    queries = []
    for number, conversation in enumerate([None, long_chat]):
        make_comparison(conversation=conversation)
        client = client_of(make_user(f"reader{number}", roles.ANNOTATOR))
        with CaptureQueriesContext(connection) as captured:
            html = client.get(PAGE, **HTMX).content.decode()
        queries.append(len(captured))
        assert ("Turn 6." in html) == (conversation is not None)
    assert queries[0] == queries[1]
