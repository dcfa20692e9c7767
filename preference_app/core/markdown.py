"""Model replies and chat messages as safe HTML: markdown rendered, every bit of raw HTML inert.

Two layers, so that one mistake cannot open the page to script: markdown-it-py with raw HTML off
escapes any tag the text holds, and nh3 (an allow-list sanitiser) then keeps only the elements and
attributes markdown produces, with links limited to http, https and mailto. Images are not
rendered: a reply could otherwise make every annotator's browser fetch an address it chose. The
Content-Security-Policy stays the third line.
"""

from __future__ import annotations

import nh3
from django.utils.safestring import SafeString, mark_safe
from markdown_it import MarkdownIt

# The elements markdown-it-py's CommonMark preset produces, images excepted.
ALLOWED_TAGS = {
    "p", "br", "strong", "em", "code", "pre", "blockquote", "ul", "ol", "li", "a", "hr",
    "h1", "h2", "h3", "h4", "h5", "h6",
}
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "ol": {"start"}}
URL_SCHEMES = {"http", "https", "mailto"}

# A single newline in a model reply is a line break the model meant, so it is kept (`breaks`).
_MARKDOWN = MarkdownIt("commonmark", {"html": False, "breaks": True}).disable("image")


def markdown_html(text: str) -> SafeString:
    """`text` rendered as markdown and sanitised: safe to put into a page as it is."""
    rendered = _MARKDOWN.render(text)
    cleaned = nh3.clean(
        rendered,
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes=URL_SCHEMES,
        link_rel="nofollow noopener noreferrer",
    )
    return mark_safe(cleaned)  # noqa: S308 - escaped by markdown-it-py, then allow-listed by nh3.
