"""The Celery application: configured from Django settings (CELERY_*) and discovering app tasks."""

import os

from celery import Celery
from celery.signals import worker_init, worker_process_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "preference_app.settings")

app = Celery("preference_app")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_init.connect
@worker_process_init.connect
def torch_threads_set(**kwargs) -> None:
    """Give torch the worker's share of the cores (WORKER_TORCH_THREADS), in the process that runs
    tasks: the pool's child under prefork, the worker itself under the solo pool."""
    from django.conf import settings

    if settings.WORKER_TORCH_THREADS > 0:
        import torch

        torch.set_num_threads(settings.WORKER_TORCH_THREADS)
