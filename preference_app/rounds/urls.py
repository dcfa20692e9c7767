from django.urls import path

from preference_app.rounds import views

app_name = "rounds"

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("progress/", views.progress, name="progress"),
    path("start/", views.start, name="start"),
    path("<int:round_id>/<str:action>/", views.act, name="act"),
    path("versions/<int:version_id>/promote/", views.promote, name="promote"),
]
