from django.urls import path

from preference_app.api import data_views, views

app_name = "api"

urlpatterns = [
    path("auth/token/", views.TokenView.as_view(), name="token"),
    path("prompts/", views.PromptListView.as_view(), name="prompt-list"),
    path("prompts/<int:pk>/", views.PromptDetailView.as_view(), name="prompt-detail"),
    path("comparisons/", views.ComparisonListView.as_view(), name="comparison-list"),
    path("comparisons/<int:pk>/", views.ComparisonDetailView.as_view(), name="comparison-detail"),
    path("assignments/next/", views.AssignmentNextView.as_view(), name="assignment-next"),
    path("judgments/", views.JudgmentListView.as_view(), name="judgment-list"),
    path("judgments/<int:pk>/", views.JudgmentDetailView.as_view(), name="judgment-detail"),
    path("rounds/", views.TrainingRoundListView.as_view(), name="round-list"),
    path("rounds/<int:pk>/", views.TrainingRoundDetailView.as_view(), name="round-detail"),
    path("model-versions/", views.ModelVersionListView.as_view(), name="model-version-list"),
    path("model-versions/<int:pk>/", views.ModelVersionDetailView.as_view(), name="model-version-detail"),
    path("export/", data_views.ExportView.as_view(), name="export"),
    path("export/card/", data_views.ExportCardView.as_view(), name="export-card"),
    path("export-jobs/", data_views.ExportJobListView.as_view(), name="export-job-list"),
    path("export-jobs/<uuid:pk>/", data_views.ExportJobDetailView.as_view(), name="export-job-detail"),
    path("export-jobs/<uuid:pk>/data/", data_views.ExportJobDataView.as_view(), name="export-job-data"),
    path("export-jobs/<uuid:pk>/card/", data_views.ExportJobCardView.as_view(), name="export-job-card"),
    path("import-jobs/", data_views.ImportJobListView.as_view(), name="import-job-list"),
    path("import-jobs/<uuid:pk>/", data_views.ImportJobDetailView.as_view(), name="import-job-detail"),
    path("import-jobs/<uuid:pk>/resume/", data_views.ImportJobResumeView.as_view(), name="import-job-resume"),
]
