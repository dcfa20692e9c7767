from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from preference_app.core.errors import InvalidInput
from preference_app.core.models import TrainingRound
from preference_app.rounds.round_settings import DEMO_ROUND
from preference_app.rounds.services import round_start


class Command(BaseCommand):
    help = ("Start one quick round that trains at once on the judgments already stored (the demo's imported "
            "HH-RLHF pairs), unless a round was ever started: the worker runs it in the background.")

    def handle(self, *args, **options):
        if TrainingRound.objects.exists():
            self.stdout.write("A round was already started here; no demo round is added.")
            return
        admin = get_user_model().objects.filter(username="admin").first()
        try:
            training_round = round_start(settings_values=DEMO_ROUND, started_by=admin)
        except InvalidInput as error:
            raise CommandError(f"The demo round was not started. {error}") from None
        self.stdout.write(f"Started demo round {training_round.number}: it generates, trains on the imported pairs "
                          f"and evaluates in the background (see /rounds/).")
