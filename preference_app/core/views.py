from django.contrib.auth.decorators import login_required
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from preference_app.core.selectors import collection_overview


@login_required
def home(request: HttpRequest) -> HttpResponse:
    return render(request, "home.html", {"overview": collection_overview()})


def health(request: HttpRequest) -> JsonResponse:
    """Liveness for load balancers and compose: answers only if the database does."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok"})
