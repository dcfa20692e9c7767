from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from preference_app.api.models import ImportedPair
from preference_app.api.services import DEFAULT_IMPORTED_STRENGTH, preferences_import
from preference_app.core.services import InvalidInput


class Command(BaseCommand):
    help = (
        "Import preference pairs from Anthropic HH-RLHF JSONL (`--format hh`) or TRL preference JSONL "
        "(`--format trl`), optionally gzipped. All or nothing; pairs already imported are skipped."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path)
        parser.add_argument("--format", dest="file_format", choices=ImportedPair.Format.values, required=True)
        parser.add_argument(
            "--strength", type=int, default=DEFAULT_IMPORTED_STRENGTH,
            help="Strength (1-4) recorded for pairs without a margin.",
        )

    def handle(self, *args, file: Path, file_format: str, strength: int, **options):
        if not file.is_file():
            raise CommandError(f"{file} does not exist.")
        try:
            report = preferences_import(path=file, file_format=file_format, strength=strength)
        except InvalidInput as error:
            raise CommandError(f"Nothing was imported. {error}") from None
        self.stdout.write(f"{report.created} pairs imported, {report.skipped_duplicates} duplicates skipped.")
