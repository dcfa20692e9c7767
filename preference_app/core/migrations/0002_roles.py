"""Create the annotator, researcher and admin groups with their permissions."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

from preference_app.core.roles import roles_ensure


def create_roles(apps, schema_editor):
    # Permissions are normally created after all migrations (post_migrate); create them now so the
    # groups can reference them on a fresh database. The migration state's app config has no
    # models module, which create_permissions takes as "nothing to do", so one is faked for the call.
    core = apps.get_app_config("core")
    core.models_module = True
    create_permissions(core, verbosity=0)
    core.models_module = None
    roles_ensure(apps.get_model("auth", "Group"), apps.get_model("auth", "Permission"))


class Migration(migrations.Migration):
    dependencies = [
        ("core", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(create_roles, migrations.RunPython.noop)]
