from django.apps import AppConfig


class ApiConfig(AppConfig):
    name = "preference_app.api"
    label = "api"
    verbose_name = "API, export and import"
