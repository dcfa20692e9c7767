"""Roles exist after migrate, as groups whose permissions match what each role may do."""

from django.contrib.auth.models import Group

from preference_app.core import roles


def test_migrate_creates_the_three_role_groups(db):
    assert set(Group.objects.values_list("name", flat=True)) >= {roles.ANNOTATOR, roles.RESEARCHER, roles.ADMIN}


def test_only_researchers_and_admins_may_export(annotator, researcher, admin_user):
    assert not annotator.has_perm("core.export_preferences")
    assert researcher.has_perm("core.export_preferences")
    assert admin_user.has_perm("core.export_preferences")


def test_only_admins_may_start_rounds(annotator, researcher, admin_user):
    assert not annotator.has_perm("core.start_round")
    assert not researcher.has_perm("core.start_round")
    assert admin_user.has_perm("core.start_round")


def test_annotators_may_judge_but_not_read_other_peoples_judgments(annotator):
    assert annotator.has_perm("core.add_judgment")
    assert not annotator.has_perm("core.view_judgment")
