"""The preference-collection web app (Django project package)."""

from preference_app.celery import app as celery_app

__all__ = ["celery_app"]
