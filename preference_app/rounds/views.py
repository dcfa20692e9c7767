"""The training dashboard: admins start, cancel and retry rounds; admins and researchers watch them."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required, permission_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from preference_app.core.errors import InvalidInput
from preference_app.core.models import ModelVersion
from preference_app.rounds import selectors, services
from preference_app.rounds.charts import round_charts
from preference_app.rounds.forms import RoundSettingsForm
from preference_app.rounds.round_plan import RoundPlan, rates_measured, round_plan
from preference_app.rounds.round_settings import PRESETS, RoundSettings


@require_GET
@login_required
@permission_required("core.view_traininground", raise_exception=True)
def dashboard(request: HttpRequest) -> HttpResponse:
    # `?preset=standard` fills the start form with a preset's values; the admin can still edit them.
    preset = request.GET.get("preset", "")
    if request.htmx and request.htmx.target == "round-plan":
        # The form asks again for the plan whenever a setting changes; only the plan is sent back.
        form = RoundSettingsForm(request.GET)
        context = {"plan": _plan(form)}
        return render(request, "rounds/dashboard.html#round-plan", context)
    form = RoundSettingsForm(preset=PRESETS.get(preset))
    return render(request, "rounds/dashboard.html", _dashboard_context(request, form, preset=preset))


def _dashboard_context(request: HttpRequest, form: RoundSettingsForm, *, preset: str = "") -> dict:
    # `?control=length` shows ratings at equal reply length (Chatbot Arena's style control).
    style_control = request.GET.get("control") == "length"
    history = selectors.round_history()
    return {
        "progress": _progress_context(),
        "history": history,
        "charts": round_charts(history),
        "leaderboard": selectors.policy_leaderboard(style_control=style_control),
        "style_control": style_control,
        "annotators": selectors.annotator_statistics(),
        "versions": ModelVersion.objects.select_related("training_round", "parent").order_by("-id")[:30],
        "form": form,
        "plan": _plan(form),
        "presets": [(name, name.replace("_", " ")) for name in PRESETS],
        "preset": preset if preset in PRESETS else "",
        "can_manage": request.user.has_perm("core.start_round"),
    }


def _plan(form: RoundSettingsForm) -> RoundPlan | None:
    """The plan of the settings the form holds (its initial values, or submitted ones that are
    valid), timed at the rates the last rounds on this server measured, or the README's before any."""
    if not form.is_bound:
        round_settings = RoundSettings.from_dict(form.initial)
    elif form.is_valid():
        round_settings = form.round_settings
    else:
        return None
    return round_plan(round_settings, rates_measured(selectors.rounds_timed()))


def _progress_context():
    # Only reads: a GET never writes. Stalled rounds are failed by the sweeper (rounds/sweeper.py).
    active = selectors.active_round()
    return selectors.round_progress(training_round=active) if active else None


@require_GET
@login_required
@permission_required("core.view_traininground", raise_exception=True)
def progress(request: HttpRequest) -> HttpResponse:
    """The live progress panel, polled by htmx while a round runs."""
    return render(request, "rounds/dashboard.html#progress", {"progress": _progress_context(),
                                                               "can_manage": request.user.has_perm("core.start_round")})


@require_POST
@login_required
@permission_required("core.start_round", raise_exception=True)
def start(request: HttpRequest) -> HttpResponse:
    form = RoundSettingsForm(request.POST)
    if not form.is_valid():
        # The page again with each refusal beside its setting and the values as typed.
        context = _dashboard_context(request, form)
        return render(request, "rounds/dashboard.html", context, status=400)
    try:
        training_round = services.round_start(settings_values=form.settings_values(), started_by=request.user)
    except InvalidInput as error:
        messages.error(request, f"The round was not started: {error}")
    else:
        messages.success(request, f"Round {training_round.number} started.")
    return redirect("rounds:dashboard")


@require_POST
@login_required
@permission_required("core.start_round", raise_exception=True)
def act(request: HttpRequest, round_id: int, action: str) -> HttpResponse:
    actions = {
        "cancel": (lambda round_id: services.round_cancel(round_id=round_id), "cancelled", "is already finished"),
        "retry": (lambda round_id: services.round_retry(round_id=round_id), "resumed at the step that failed",
                  "has not failed"),
        "advance": (lambda round_id: services.round_training_begin(round_id=round_id), "moved on to training",
                    "is not collecting judgments"),
        "promote": (lambda round_id: services.round_verdict_decide(round_id=round_id, promote=True),
                    "completed: its policy was promoted by hand", "is not awaiting a verdict"),
        "keep": (lambda round_id: services.round_verdict_decide(round_id=round_id, promote=False),
                 "completed: the serving policy was kept by hand", "is not awaiting a verdict"),
    }
    if action not in actions:
        messages.error(request, f"Unknown action {action!r}.")
        return redirect("rounds:dashboard")
    service, done, refused = actions[action]
    if service(round_id):
        messages.success(request, f"Round {done}.")
    else:
        messages.error(request, f"Nothing done: the round {refused}.")
    return redirect("rounds:dashboard")


@require_POST
@login_required
@permission_required("core.start_round", raise_exception=True)
def promote(request: HttpRequest, version_id: int) -> HttpResponse:
    version = get_object_or_404(ModelVersion, pk=version_id)
    services.model_version_promote(version=version)
    messages.success(request, f"{version.name} now serves as the {version.get_kind_display().lower()}.")
    return redirect("rounds:dashboard")
