"""Celery tasks of the core app: thin wrappers that take ids and call a service."""

from celery import shared_task

from preference_app.core import generation


# acks_late is safe here because the service claims the batch with a conditional update: a message
# delivered twice (a worker lost mid-task, a retry) generates the batch once.
@shared_task(acks_late=True, reject_on_worker_lost=True)
def generate_candidates(batch_id: int) -> dict:
    batch = generation.generation_batch_run(batch_id=batch_id)
    return {"batch": batch.pk, "status": batch.status, "candidates": batch.candidates_created}
