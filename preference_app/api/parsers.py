"""Request parsers: DRF's JSON parser with a limit on how deeply a body may nest."""

from __future__ import annotations

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

# No request of this API nests deeper than a few levels (a judgment's flags, an export's filters).
# Python's JSON decoder recurses once per level and a body of 50,000 "[" ran it out of stack, a
# server error; anything that walks the parsed value later (serializers, error details) recurses too.
MAX_JSON_DEPTH = 64


def json_depth_exceeds(value, limit: int) -> bool:
    """Whether lists and objects nest more than `limit` levels deep in a parsed JSON value.

    Walked with an explicit stack, so the check itself cannot run out of recursion.
    """
    stack = [(value, 1)]
    while stack:
        current, depth = stack.pop()
        if isinstance(current, dict):
            children = current.values()
        elif isinstance(current, list):
            children = current
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


class DepthLimitedJSONParser(JSONParser):
    """JSON bodies nested more than MAX_JSON_DEPTH levels deep are a 400, not a server error."""

    def parse(self, stream, media_type=None, parser_context=None):
        too_deep = ParseError(f"JSON parse error - the body nests more than {MAX_JSON_DEPTH} levels deep.")
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            # The decoder ran out of stack, far beyond MAX_JSON_DEPTH: the same answer.
            raise too_deep from None
        if json_depth_exceeds(data, MAX_JSON_DEPTH):
            raise too_deep
        return data
