from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("core", "0007_login_attempts"),
    ]

    operations = [
        migrations.AddField(
            model_name="traininground",
            name="step_claimed_by",
            field=models.CharField(blank=True, max_length=200),
        ),
        migrations.AddField(
            model_name="traininground",
            name="step_queued",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="traininground",
            name="step_attempts",
            field=models.PositiveSmallIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="generationbatch",
            name="claimed_by",
            field=models.CharField(blank=True, max_length=200),
        ),
        migrations.AddField(
            model_name="generationbatch",
            name="enqueued",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="generationbatch",
            name="attempts",
            field=models.PositiveSmallIntegerField(default=0),
        ),
    ]
