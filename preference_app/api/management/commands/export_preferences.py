from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from preference_app.api import formats
from preference_app.api.serializers import ExportQuerySerializer
from preference_app.api.services import export_write


class Command(BaseCommand):
    help = (
        "Export preferences into a folder: the data file (streamed, memory stays flat) and a README.md "
        "dataset card. Filters and options are those of GET /api/export/."
    )

    def add_arguments(self, parser):
        parser.add_argument("output", type=Path, help="Folder to write the data file and README.md into.")
        parser.add_argument("--dataset", choices=formats.DATASET_FORMATS, default=formats.TRL_CONVERSATIONAL)
        parser.add_argument("--file-format", choices=formats.FILE_FORMATS, default=formats.JSONL)
        parser.add_argument("--margin", action="store_true", help="Add a margin column (mean strength).")
        parser.add_argument("--include-ties", action="store_true", help="Keep ties and both-bad with margin 0.")
        parser.add_argument("--include-flagged", action="store_true",
                            help="Keep comparisons flagged unsafe or unusable (left out by default).")
        parser.add_argument("--exclude-cut-off", action="store_true",
                            help="Leave out comparisons with a reply cut at the model's token limit.")
        parser.add_argument("--round", type=int, help="Training round number.")
        parser.add_argument("--model-version", type=int, help="Model version id of either candidate.")
        parser.add_argument("--annotator", help="Annotator pseudonym.")
        parser.add_argument("--min-strength", type=int, help="1-4; Bai et al. dropped the weakest with 2.")
        parser.add_argument("--min-agreement", type=float, help="0-1: share of judgments agreeing with the outcome.")
        parser.add_argument("--created-after", help="ISO date or time.")
        parser.add_argument("--created-before", help="ISO date or time.")

    def handle(self, *args, output: Path, **options):
        data = {
            name: options[name]
            for name in (
                "dataset", "file_format", "margin", "include_ties", "include_flagged", "exclude_cut_off", "round", "model_version", "annotator",
                "min_strength", "min_agreement", "created_after", "created_before",
            )
            if options[name] is not None
        }
        serializer = ExportQuerySerializer(data=data)
        if not serializer.is_valid():
            problems = "; ".join(f"{field}: {' '.join(map(str, errors))}" for field, errors in serializer.errors.items())
            raise CommandError(f"Nothing was exported. {problems}")
        result = export_write(query=serializer.to_query(), directory=output)
        self.stdout.write(f"{result.rows} rows written to {result.data_path}; dataset card {result.card_path}.")
