"""The Celery application: configured from Django settings (CELERY_*) and discovering app tasks."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "preference_app.settings")

app = Celery("preference_app")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
