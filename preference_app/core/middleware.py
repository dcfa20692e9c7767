"""Answer a request whose database connection failed with a clear 503 instead of a bare 500."""

from __future__ import annotations

import logging

from django.db import IntegrityError, InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string

logger = logging.getLogger(__name__)

DATABASE_UNAVAILABLE = (
    "The database could not be reached, so nothing you sent was saved. Please submit again in a moment."
)


class DatabaseUnavailableMiddleware:
    """Turn a lost or refused database connection into "nothing was saved, submit again".

    The request's transaction was rolled back with the connection, so the message is true, and a
    resubmit is safe: judgments are unique per annotator and comparison. Django discards the broken
    connection when the request ends, so the next request connects afresh. The page is rendered
    without the site template, which would query the database for the signed-in user. Integrity and
    other programming errors are not outages and still surface as errors.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, (OperationalError, InterfaceError)) or isinstance(exception, IntegrityError):
            return None
        logger.error("Database unavailable during %s %s: %s", request.method, request.path, exception)
        page = render_to_string("errors/database_unavailable.html", {"message": DATABASE_UNAVAILABLE})
        response = HttpResponse(page, status=503)
        response["Retry-After"] = "5"
        # htmx does not swap an error response in; the page's script shows this header instead.
        response["X-Error-Message"] = DATABASE_UNAVAILABLE
        return response
