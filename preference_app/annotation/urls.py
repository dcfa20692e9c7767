from django.urls import path

from preference_app.annotation import views

app_name = "annotation"

urlpatterns = [
    path("", views.compare, name="compare"),
    path("<int:comparison_id>/judge/", views.judge, name="judge"),
    path("<int:comparison_id>/skip/", views.skip, name="skip"),
    path("guidelines/", views.guidelines, name="guidelines"),
    path("chat/", views.chat_list, name="chat_list"),
    path("chat/<int:conversation_id>/", views.chat_detail, name="chat_detail"),
    path("chat/<int:conversation_id>/drafts/", views.chat_drafts, name="chat_drafts"),
    path("chat/<int:conversation_id>/message/", views.chat_message, name="chat_message"),
    path("chat/<int:conversation_id>/judge/<int:comparison_id>/", views.chat_judge, name="chat_judge"),
    path("chat/<int:conversation_id>/retry/", views.chat_retry, name="chat_retry"),
    path("chat/<int:conversation_id>/end/", views.chat_end, name="chat_end"),
]
