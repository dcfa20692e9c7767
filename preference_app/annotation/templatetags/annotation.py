from django import template
from django.utils.safestring import SafeString

from preference_app.annotation.selectors import user_can_annotate
from preference_app.core.markdown import markdown_html

register = template.Library()


@register.filter
def can_annotate(user) -> bool:
    """`{% if user|can_annotate %}`: show the annotation links only to those the views will let in."""
    return user_can_annotate(user)


@register.filter
def as_markdown(text: str) -> SafeString:
    """`{{ reply.text|as_markdown }}`: the text rendered as markdown, with any HTML in it left inert."""
    return markdown_html(text)
