"""Model replies rendered as markdown: formatting kept, anything that could run or fetch left inert."""

import pytest

from preference_app.core.markdown import markdown_html


def test_bold_lists_and_code_become_their_elements():
    html = markdown_html("**bold** and *slanted*\n\n1. one\n2. two\n\n- dot\n\n`x < y`")
    assert "<strong>bold</strong>" in html and "<em>slanted</em>" in html
    assert "<ol>\n<li>one</li>\n<li>two</li>\n</ol>" in html
    assert "<ul>\n<li>dot</li>\n</ul>" in html
    assert "<code>x &lt; y</code>" in html


def test_a_single_newline_stays_a_line_break():
    assert markdown_html("first line\nsecond line") == "<p>first line<br>\nsecond line</p>\n"


@pytest.mark.parametrize("payload", [
    "<script>window.__xss=2</script>",
    '<img src=x onerror="window.__xss=1">',
    '"><svg onload="window.__xss=3">',
    "<iframe src=//evil.example></iframe>",
])
def test_raw_html_is_shown_as_text_never_as_markup(payload):
    html = markdown_html(payload)
    assert "<script" not in html and "<img" not in html and "<svg" not in html and "<iframe" not in html
    assert "&lt;" in html


@pytest.mark.parametrize("link", ["[click](javascript:alert(1))", "[x](data:text/html,hi)", "[x](vbscript:msgbox)"])
def test_links_to_script_urls_are_not_links(link):
    assert "<a " not in markdown_html(link)


def test_web_links_open_without_handing_over_the_page():
    assert markdown_html("[docs](https://example.org)") == (
        '<p><a href="https://example.org" rel="nofollow noopener noreferrer">docs</a></p>\n'
    )


def test_images_are_not_fetched():
    assert "<img" not in markdown_html("![tracker](https://example.org/pixel.png)")
