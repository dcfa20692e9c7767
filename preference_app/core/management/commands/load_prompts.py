from django.core.management.base import BaseCommand

from preference_app.core.prompts import builtin_prompts_load


class Command(BaseCommand):
    help = "Load the built-in prompt set (prompts already stored are skipped)."

    def handle(self, *args, **options):
        report = builtin_prompts_load()
        self.stdout.write(f"Built-in prompts: {report.created} added, {report.skipped_duplicates} already present.")
