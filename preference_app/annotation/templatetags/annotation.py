from django import template

from preference_app.annotation.selectors import user_can_annotate

register = template.Library()


@register.filter
def can_annotate(user) -> bool:
    """`{% if user|can_annotate %}`: show the annotation links only to those the views will let in."""
    return user_can_annotate(user)
