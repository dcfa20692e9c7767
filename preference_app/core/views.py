from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import LoginView
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from preference_app.core import login_limits
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
    """Django's login view, refusing for a while after LOGIN_FAILURE_LIMIT failed attempts.

    The refusal is checked before the password is, so a locked-out guesser learns nothing from it.
    """

    def post(self, request: HttpRequest, *args, **kwargs) -> HttpResponse:
        address, username = request.META.get("REMOTE_ADDR", ""), request.POST.get("username", "")
        if not login_limits.login_allowed(address=address, username=username):
            form = self.get_form()
            form.errors.clear()
            form.add_error(None, LOCKED_OUT.format(minutes=max(1, settings.LOGIN_LOCKOUT_SECONDS // 60)))
            return self.render_to_response(self.get_context_data(form=form), status=429)
        response = super().post(request, *args, **kwargs)
        if request.user.is_authenticated:
            login_limits.login_failures_clear(address=address, username=username)
        else:
            login_limits.login_failure_record(address=address, username=username)
        return response
