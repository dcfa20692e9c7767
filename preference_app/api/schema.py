"""Additions to the generated OpenAPI schema that drf-spectacular cannot infer from the views."""

from __future__ import annotations

# Every operation can answer these; without them a client generated from the schema (and the
# schemathesis fuzz test) would treat a validation error or a missing object as undocumented.
ERROR_RESPONSES = {
    "400": "The input is invalid: the body names each field's problem, or says what is not ready yet.",
    "403": "Not signed in, or signed in without the role this operation needs.",
    "404": "No such object, or not one visible to you; also a page number past the last page.",
}
TOO_MANY_SIGN_INS = "Too many failed sign-ins for this user name from this address; try again later."


def document_error_responses(result, generator, request, public):
    """drf-spectacular post-processing hook: add the shared error responses to every operation."""
    for path, path_item in result.get("paths", {}).items():
        for operation in path_item.values():
            responses = operation.setdefault("responses", {})
            for status, description in ERROR_RESPONSES.items():
                responses.setdefault(status, {"description": description})
            if path == "/api/auth/token/":
                responses.setdefault("429", {"description": TOO_MANY_SIGN_INS})
    return result
