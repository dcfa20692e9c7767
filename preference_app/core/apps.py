from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "preference_app.core"
    label = "core"
    verbose_name = "Preference data"
