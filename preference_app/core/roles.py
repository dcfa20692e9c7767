"""The three roles of the app, as Django groups with permissions.

Annotators judge and write prompts; researchers read everything and export datasets; admins may
also start training rounds and manage model versions.
"""

from __future__ import annotations

ANNOTATOR = "annotator"
RESEARCHER = "researcher"
ADMIN = "admin"
# Admins may judge comparisons too, to try the interface and to annotate themselves.
ANNOTATING_ROLES = (ANNOTATOR, ADMIN)

_READ_CORE = [
    "view_prompt",
    "view_conversation",
    "view_turn",
    "view_candidate",
    "view_comparison",
    "view_judgment",
    "view_modelversion",
    "view_traininground",
    "view_demonstration",
]

ROLE_PERMISSIONS: dict[str, list[str]] = {
    ANNOTATOR: ["add_judgment", "add_prompt", "add_conversation", "add_demonstration"],
    RESEARCHER: _READ_CORE + ["export_preferences"],
    ADMIN: _READ_CORE
    + [
        "export_preferences",
        "start_round",
        "add_traininground",
        "change_traininground",
        "change_modelversion",
        "add_prompt",
        "change_prompt",
        "change_comparison",
    ],
}


def sees_internals(user) -> bool:
    """Whether `user` may read what describes the server rather than the data: a failed round's
    traceback and the file paths of checkpoints. Admins (who start rounds and fix them) may; the
    paths and tracebacks tell anyone else only where to aim."""
    return bool(user and user.is_authenticated and user.has_perm("core.start_round"))


def roles_ensure(group_model, permission_model) -> None:
    """Create the role groups and give each exactly its permissions (safe to run again).

    Takes the model classes as arguments so a data migration can pass its historical models.
    """
    for role, codenames in ROLE_PERMISSIONS.items():
        group, _ = group_model.objects.get_or_create(name=role)
        permissions = permission_model.objects.filter(content_type__app_label="core", codename__in=codenames)
        missing = set(codenames) - set(permissions.values_list("codename", flat=True))
        if missing:
            raise RuntimeError(f"Permissions missing for role {role}: {sorted(missing)}")
        group.permissions.set(permissions)
