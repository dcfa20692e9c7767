from django.apps import AppConfig


class RoundsConfig(AppConfig):
    name = "preference_app.rounds"
    label = "rounds"
    verbose_name = "Training rounds"
