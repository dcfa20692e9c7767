from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from preference_app.core.errors import InvalidInput
from preference_app.core.prompts import prompts_import


class Command(BaseCommand):
    help = "Import prompts from a JSONL file ({\"text\": ..., \"tags\": [...]} per line) or a CSV file with a text column."

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path)

    def handle(self, *args, file: Path, **options):
        if not file.is_file():
            raise CommandError(f"{file} does not exist.")
        try:
            report = prompts_import(path=file)
        except InvalidInput as error:
            raise CommandError(f"Nothing was imported. {error}") from None
        self.stdout.write(f"{report.created} prompts added, {report.skipped_duplicates} duplicates skipped.")
