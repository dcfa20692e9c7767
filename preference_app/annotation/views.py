"""Pages of the annotation interface.

Every page works as plain HTML forms (post, redirect, get). With htmx the same views answer
`request.htmx` with only the part of the page that changed: the next comparison after a judgment,
the chat's current step while replies are generated.
"""

from __future__ import annotations

from functools import wraps

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from preference_app.annotation import chat, selectors, services
from preference_app.annotation.forms import (
    EXTRA_POINTS,
    FLAG_CHOICES,
    SCALE_POINTS,
    ChatEndForm,
    ChatJudgmentForm,
    ChatMessageForm,
    JudgmentForm,
)
from preference_app.core.errors import InvalidInput


def annotator_required(view):
    """Anonymous visitors go to the login page; signed-in users outside the annotator role get a 403."""

    @login_required
    @wraps(view)
    def wrapped(request: HttpRequest, *args, **kwargs):
        if not selectors.user_can_annotate(request.user):
            raise PermissionDenied("Only annotators can judge comparisons.")
        return view(request, *args, **kwargs)

    return wrapped


def _scale_context(form) -> dict:
    return {"form": form, "scale": SCALE_POINTS, "extra_points": EXTRA_POINTS, "flag_choices": FLAG_CHOICES}


def _render_work(request: HttpRequest, *, form=None, notice: str = "") -> HttpResponse:
    """The comparison page, or with htmx just its work area, for the annotator's current assignment."""
    assignment = services.assignment_next(annotator=request.user)
    context = {
        "pair": selectors.shown_pair(assignment=assignment) if assignment else None,
        "progress": selectors.annotator_progress(annotator=request.user),
        "notice": notice,
        **_scale_context(form or JudgmentForm()),
    }
    template = "annotation/_work.html" if request.htmx else "annotation/compare.html"
    return render(request, template, context)


def _after_post(request: HttpRequest, target: str, *, notice: str, level=messages.SUCCESS):
    """Without htmx: post/redirect/get with the notice as a message. With htmx the caller renders."""
    messages.add_message(request, level, notice)
    return redirect(target)


@require_GET
@annotator_required
def compare(request: HttpRequest) -> HttpResponse:
    return _render_work(request)


@require_POST
@annotator_required
def judge(request: HttpRequest, comparison_id: int) -> HttpResponse:
    form = JudgmentForm(request.POST)
    if not form.is_valid():
        return _render_work(request, form=form)
    try:
        outcome = services.assignment_judge(
            annotator=request.user,
            comparison_id=comparison_id,
            preference=form.cleaned_data["preference"],
            rationale=form.cleaned_data["rationale"],
            flags=form.cleaned_data["flags"],
        )
    except InvalidInput as error:
        notice = str(error)
    else:
        notice = (
            "Saved. Here is the next one."
            if outcome.created
            else "You had already judged that comparison; your first answer is kept."
        )
    if request.htmx:
        return _render_work(request, notice=notice)
    return _after_post(request, reverse("annotation:compare"), notice=notice)


@require_POST
@annotator_required
def skip(request: HttpRequest, comparison_id: int) -> HttpResponse:
    services.assignment_skip(annotator=request.user, comparison_id=comparison_id)
    notice = "Skipped. You will not be shown that comparison again."
    if request.htmx:
        return _render_work(request, notice=notice)
    return _after_post(request, reverse("annotation:compare"), notice=notice, level=messages.INFO)


@require_GET
def guidelines(request: HttpRequest) -> HttpResponse:
    return render(request, "annotation/guidelines.html", {"scale": SCALE_POINTS, "extra_points": EXTRA_POINTS})


# Live chat ------------------------------------------------------------------------------------


@annotator_required
def chat_list(request: HttpRequest) -> HttpResponse:
    """Recent chats, and a form whose message starts a new one."""
    form = ChatMessageForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            conversation = chat.chat_start(annotator=request.user, text=form.cleaned_data["text"])
        except InvalidInput as error:
            form.add_error("text", str(error))
        else:
            return redirect("annotation:chat_detail", conversation_id=conversation.pk)
    return render(
        request, "annotation/chat_list.html", {"form": form, "chats": selectors.chats_recent(annotator=request.user)}
    )


def _render_chat(
    request: HttpRequest, conversation, *, forms: dict | None = None, notice: str = "", unless: str = ""
) -> HttpResponse:
    """The chat page, or with htmx its chat section; a poll whose phase has not changed gets a 204.

    htmx leaves the page alone on a 204, so polling while replies are generated does not redraw
    (and close) what the annotator has open, such as the form that ends the chat.
    """
    state = chat.chat_state(annotator=request.user, conversation=conversation)
    if request.htmx and unless and unless == state.phase:
        return HttpResponse(status=204)
    context = {
        "state": state,
        "notice": notice,
        "message_form": ChatMessageForm(),
        "end_form": ChatEndForm(),
        **_scale_context(ChatJudgmentForm()),
        **(forms or {}),
    }
    template = "annotation/_chat.html" if request.htmx else "annotation/chat.html"
    return render(request, template, context)


def _chat_posted(request: HttpRequest, conversation, *, notice: str = "", forms: dict | None = None) -> HttpResponse:
    """Answer a chat form: the refreshed chat for htmx, a redirect (or the page with errors) without it."""
    if request.htmx or forms:
        return _render_chat(request, conversation, forms=forms, notice=notice)
    if notice:
        messages.info(request, notice)
    return redirect("annotation:chat_detail", conversation_id=conversation.pk)


@require_GET
@annotator_required
def chat_detail(request: HttpRequest, conversation_id: int) -> HttpResponse:
    conversation = selectors.chat_get(annotator=request.user, conversation_id=conversation_id)
    return _render_chat(request, conversation, unless=request.GET.get("unless", ""))


@require_GET
@annotator_required
def chat_drafts(request: HttpRequest, conversation_id: int) -> HttpResponse:
    """The replies being written, polled by the chat page while they grow. Once they are done (or
    failed) it answers 204 with the `chat-replies-done` event, on which the chat section reloads.

    Short polling of the text the worker last wrote, rather than server-sent events: an open stream
    would hold one of gunicorn's sync workers for the whole turn (twenty chats, twenty workers),
    while a poll is one short read; the page without htmx shows the same text on reload; and the
    Content-Security-Policy needs nothing new.
    """
    conversation = selectors.chat_get(annotator=request.user, conversation_id=conversation_id)
    drafts = selectors.chat_drafts(conversation=conversation)
    if drafts is None:
        return HttpResponse(status=204, headers={"HX-Trigger": "chat-replies-done"})
    return render(request, "annotation/_drafts.html", {"drafts": drafts})


@require_POST
@annotator_required
def chat_message(request: HttpRequest, conversation_id: int) -> HttpResponse:
    conversation = selectors.chat_get(annotator=request.user, conversation_id=conversation_id)
    form = ChatMessageForm(request.POST)
    if form.is_valid():
        try:
            chat.chat_message_send(conversation=conversation, text=form.cleaned_data["text"])
        except InvalidInput as error:
            form.add_error("text", str(error))
    if form.errors:
        return _chat_posted(request, conversation, forms={"message_form": form})
    return _chat_posted(request, conversation)


@require_POST
@annotator_required
def chat_judge(request: HttpRequest, conversation_id: int, comparison_id: int) -> HttpResponse:
    conversation = selectors.chat_get(annotator=request.user, conversation_id=conversation_id)
    form = ChatJudgmentForm(request.POST)
    if form.is_valid():
        try:
            outcome = chat.chat_judge(
                annotator=request.user,
                conversation=conversation,
                comparison_id=comparison_id,
                **form.cleaned_data,
            )
        except InvalidInput as error:
            form.add_error(None, str(error))
    if form.errors:
        return _chat_posted(request, conversation, forms=_scale_context(form))
    if not outcome.created:
        notice = "You had already judged these replies; your first answer is kept."
    elif outcome.regenerating:
        notice = "Both replies were bad: two new ones are being written."
    elif outcome.edited:
        notice = "Your edited reply continues the conversation and is saved as a demonstration."
    else:
        notice = "Saved. Write your next message."
    return _chat_posted(request, conversation, notice=notice)


@require_POST
@annotator_required
def chat_retry(request: HttpRequest, conversation_id: int) -> HttpResponse:
    conversation = selectors.chat_get(annotator=request.user, conversation_id=conversation_id)
    try:
        chat.chat_retry(annotator=request.user, conversation=conversation)
    except InvalidInput as error:
        return _chat_posted(request, conversation, notice=str(error))
    return _chat_posted(request, conversation)


@require_POST
@annotator_required
def chat_end(request: HttpRequest, conversation_id: int) -> HttpResponse:
    conversation = selectors.chat_get(annotator=request.user, conversation_id=conversation_id)
    form = ChatEndForm(request.POST)
    if not form.is_valid():
        return _chat_posted(request, conversation, forms={"end_form": form})
    chat.chat_end(conversation=conversation, rating=form.cleaned_data["rating"], comment=form.cleaned_data["comment"])
    conversation.refresh_from_db()
    return _chat_posted(request, conversation, notice="Thank you: the conversation is closed and rated.")
