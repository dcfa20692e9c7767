from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from preference_app.core.errors import InvalidInput
from preference_app.rounds.evaluation_sets import evaluation_set_active_ensure, evaluation_set_from_file


class Command(BaseCommand):
    help = (
        "Show the active evaluation set, or freeze a new version from a JSONL/CSV prompt file (a `text` field "
        "per prompt) and evaluate new rounds on it. Its prompts are never trained on."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path, nargs="?")
        parser.add_argument("--name", default="")

    def handle(self, *args, file: Path | None, name: str, **options):
        if file is None:
            evaluation_set = evaluation_set_active_ensure()
        else:
            if not file.is_file():
                raise CommandError(f"{file} does not exist.")
            try:
                evaluation_set = evaluation_set_from_file(path=file, name=name)
            except InvalidInput as error:
                raise CommandError(f"No evaluation set was stored. {error}") from None
        self.stdout.write(
            f"Active evaluation set: {evaluation_set.name}, version {evaluation_set.version}, "
            f"{len(evaluation_set.prompts)} prompts, sha256 {evaluation_set.content_sha256}"
        )
