from django.apps import AppConfig


def judgment_recorded_receiver(sender, comparison, **kwargs) -> None:
    """Each new judgment may complete a collecting round's target, a verdict, or the number of
    judgments that starts the next round by itself."""
    # Imported here: Django loads apps.py before the models that services.py imports are ready.
    from preference_app.rounds.services import judgment_recorded

    judgment_recorded(comparison=comparison)


class RoundsConfig(AppConfig):
    name = "preference_app.rounds"
    label = "rounds"
    verbose_name = "Training rounds"

    def ready(self) -> None:
        from preference_app.core.events import judgment_recorded

        judgment_recorded.connect(judgment_recorded_receiver, dispatch_uid="rounds.judgment_recorded")
