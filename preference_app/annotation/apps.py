from django.apps import AppConfig


class AnnotationConfig(AppConfig):
    name = "preference_app.annotation"
    label = "annotation"
    verbose_name = "Annotation"
