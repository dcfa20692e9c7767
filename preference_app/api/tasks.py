"""Celery tasks of the API app: thin wrappers that take ids and call a service."""

from celery import shared_task

from preference_app.api import imports, services


# No acks_late: the service claims a job with a conditional update, so a redelivered message would
# find the job running and do nothing anyway. A job whose worker died stays `running`; its
# requester starts a new one.
@shared_task
def export_job_task(job_id: str) -> dict:
    job = services.export_job_run(job_id=job_id)
    return {"job": str(job.pk), "status": job.status, "rows": job.rows}


# acks_late: a job resumes from its last committed batch and a batch commits only where the job's
# offset still is, so running the task again after a lost worker repeats nothing.
@shared_task(acks_late=True)
def import_job_task(job_id: str) -> dict:
    job = imports.import_job_run(job_id=job_id)
    return {"job": str(job.pk), "status": job.status, "pairs_stored": job.pairs_stored}
