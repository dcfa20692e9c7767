import secrets
from pathlib import Path

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from preference_app.core import roles
from preference_app.core.generation import demo_first_batch_queue
from preference_app.core.prompts import builtin_prompts_load
from training.checkpoints import ModelUnavailable
from training.generate import GenerationConfig

# 200 real human preference pairs from Anthropic's HH-RLHF (MIT licence; demo_data/README.md says
# where they come from), so a fresh demo's export and leaderboard pages show real data.
DEMO_PAIRS = Path(__file__).resolve().parents[2] / "demo_data" / "hh-rlhf-harmless-base-sample.jsonl"

DEMO_USERS = [("admin", roles.ADMIN, True), ("annotator", roles.ANNOTATOR, False), ("researcher", roles.RESEARCHER, False)]


class Command(BaseCommand):
    help = ("Create demo users (passwords printed), load the built-in prompts, import the bundled HH-RLHF sample "
            "and queue the first candidates.")

    def add_arguments(self, parser):
        parser.add_argument("--prompts", type=int, default=8, help="How many prompts get candidates now.")
        parser.add_argument("--max-new-tokens", type=int, default=96)

    def handle(self, *args, prompts: int, max_new_tokens: int, **options):
        users = get_user_model()
        for username, role, is_superuser in DEMO_USERS:
            if users.objects.filter(username=username).exists():
                self.stdout.write(f"User {username!r} already exists; its password is unchanged.")
                continue
            password = secrets.token_urlsafe(9)
            user = users.objects.create_user(
                username=username, password=password, is_staff=is_superuser, is_superuser=is_superuser
            )
            user.groups.add(Group.objects.get(name=role))
            self.stdout.write(self.style.SUCCESS(f"Created {role} {username!r} with password {password}"))
        report = builtin_prompts_load()
        self.stdout.write(f"Built-in prompts: {report.created} added, {report.skipped_duplicates} already present.")
        # Called by name: the importer lives in the api app, which core does not import. Pairs
        # already imported are skipped, so running demo_setup again adds none.
        self.stdout.write(f"Sample pairs from {DEMO_PAIRS.name}:")
        call_command("import_preferences", str(DEMO_PAIRS), file_format="hh", stdout=self.stdout, stderr=self.stderr)
        try:
            batch = demo_first_batch_queue(
                prompt_count=prompts, sampling=GenerationConfig(max_new_tokens=max_new_tokens).to_dict()
            )
        except ModelUnavailable as error:
            raise CommandError(str(error)) from None
        if batch:
            self.stdout.write(f"Queued generation batch {batch.pk} for {prompts} prompts; the worker will fill it.")
        else:
            self.stdout.write("Every prompt already has candidates queued; nothing new to generate.")
