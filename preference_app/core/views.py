from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import LoginView
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from preference_app.core.selectors import collection_overview

LOCKED_OUT = "Too many failed sign-ins for this account from your address. Try again in {minutes} minutes."


@require_GET
@login_required
def home(request: HttpRequest) -> HttpResponse:
    return render(request, "home.html", {"overview": collection_overview()})


@require_GET
def health(request: HttpRequest) -> JsonResponse:
    """Liveness for load balancers and compose: answers only if the database does."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok"})


class RateLimitedLoginView(LoginView):
    """Django's login view, answering 429 with a clear message once the sign-in limit is reached.

    The limit itself is counted by the authentication backend (core/auth.py), before the password
    is checked, so a locked-out guesser learns nothing from the refusal.
    """

    def form_invalid(self, form):
        if getattr(self.request, "login_limit_reached", False):
            form.errors.clear()
            form.add_error(None, LOCKED_OUT.format(minutes=max(1, settings.LOGIN_LOCKOUT_SECONDS // 60)))
            return self.render_to_response(self.get_context_data(form=form), status=429)
        return super().form_invalid(form)
