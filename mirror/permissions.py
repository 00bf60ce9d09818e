"""Who may do what with PFA records: one rule per act, asked alike by the API, the admin and `/api/auth/me`.

Seeing is scoping: a user sees the records of the organizations they see (`mirror.selectors`). Editing
(saving, committing and discarding drafts) and resolving conflicts need "Can edit PFA records" on top.
"""

EDIT_RECORDS = "mirror.edit_pfa_records"


def can_edit_records(user) -> bool:
    """Save, commit and discard drafts of PFA records (an inactive user has no permission at all)."""
    return user.has_perm(EDIT_RECORDS)


def can_resolve_conflicts(user) -> bool:
    """Resolve an edit in conflict with PEMS: an edit itself, so the same permission."""
    return can_edit_records(user)
