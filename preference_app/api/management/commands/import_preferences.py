from pathlib import Path

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from preference_app.api.imports import DEFAULT_IMPORTED_STRENGTH, import_job_for_file, import_job_run
from preference_app.api.models import ImportedPair, ImportJob
from preference_app.core.errors import InvalidInput


class Command(BaseCommand):
    help = (
        "Import preference pairs from Anthropic HH-RLHF JSONL (`--format hh`) or TRL preference JSONL "
        "(`--format trl`), optionally gzipped, as an import job committed in batches. Bad lines are "
        "reported as file:line: reason and skipped; pairs already imported are skipped. Run the same "
        "command again after an interruption, or give --resume JOB, to continue from the last batch."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path, nargs="?")
        parser.add_argument("--format", dest="file_format", choices=ImportedPair.Format.values)
        parser.add_argument(
            "--strength", type=int, default=DEFAULT_IMPORTED_STRENGTH,
            help="Strength (1-4) recorded for pairs without a margin.",
        )
        parser.add_argument("--resume", metavar="JOB", help="Continue this import job (an id from the admin or API).")

    def handle(self, *args, file: Path | None, file_format: str | None, strength: int, resume: str | None, **options):
        try:
            job = self._job(file, file_format, strength, resume)
        except InvalidInput as error:
            raise CommandError(f"Nothing was imported. {error}") from None
        if job.lines_read:
            self.stdout.write(f"Resuming import job {job.pk} after line {job.lines_read}.")
        else:
            self.stdout.write(f"Import job {job.pk}.")
        job = import_job_run(job_id=job.pk, on_batch=self._progress)
        for error in job.errors:
            self.stderr.write(error)
        if job.lines_skipped > len(job.errors):
            self.stderr.write(f"... and {job.lines_skipped - len(job.errors)} more bad lines.")
        if job.status == ImportJob.Status.FAILED:
            raise CommandError(f"The import failed after {job.pairs_stored} pairs. {job.error}")
        if job.status != ImportJob.Status.DONE:
            raise CommandError(f"Import job {job.pk} is {job.status}: another run of it is still going.")
        self.stdout.write(
            f"{job.pairs_stored} pairs imported, {job.duplicates_skipped} duplicates skipped, "
            f"{job.lines_skipped} bad lines skipped."
        )

    def _job(self, file, file_format, strength, resume) -> ImportJob:
        if resume:
            try:
                job = ImportJob.objects.filter(pk=resume).first()
            except ValidationError:  # Not a UUID.
                job = None
            if job is None:
                raise InvalidInput(f"There is no import job {resume}.")
            return job
        if file is None or file_format is None:
            raise CommandError("Give a FILE and its --format, or --resume JOB.")
        return import_job_for_file(path=file, file_format=file_format, strength=strength)

    def _progress(self, job: ImportJob) -> None:
        self.stdout.write(
            f"line {job.lines_read}: {job.pairs_stored} pairs stored, {job.duplicates_skipped} duplicates, "
            f"{job.lines_skipped} bad lines"
        )

