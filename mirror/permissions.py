"""Who may do what in the mirror: one rule per act, asked alike by the API, the admin and `/api/auth/me`.

Seeing is scoping: a user sees the records and organizations of the organizations they see
(`mirror.selectors`). Acting needs a permission on top, and each act's rule is defined here once:

- editing records (saving, committing and discarding drafts) and resolving conflicts need
  "Can edit PFA records";
- creating or changing an organization, and seeing or changing its PEMS connection, are staff acts:
  staff status and the model permission the admin asks for the same act (view-only staff can only look).
"""

EDIT_RECORDS = "mirror.edit_pfa_records"


def can_edit_records(user) -> bool:
    """Save, commit and discard drafts of PFA records (an inactive user has no permission at all)."""
    return user.has_perm(EDIT_RECORDS)


def can_resolve_conflicts(user) -> bool:
    """Resolve an edit in conflict with PEMS: an edit itself, so the same permission."""
    return can_edit_records(user)


def _staff_with(user, permission: str) -> bool:
    # The admin only lets staff in; the API asks for the same, so both interfaces agree.
    return bool(user.is_staff and user.has_perm(permission))


def can_create_organization(user) -> bool:
    """Register a new organization."""
    return _staff_with(user, "mirror.add_organization")


def can_change_organization(user) -> bool:
    """Change an organization's code, name, active flag or scheduled sync."""
    return _staff_with(user, "mirror.change_organization")


def can_view_connection(user) -> bool:
    """See an organization's PEMS connection (never its secret)."""
    return _staff_with(user, "mirror.view_apiconfiguration")


def can_change_connection(user, *, creating: bool = False) -> bool:
    """Create (`creating`) or change an organization's PEMS connection: where its credentials go."""
    return _staff_with(user, "mirror.add_apiconfiguration" if creating else "mirror.change_apiconfiguration")
