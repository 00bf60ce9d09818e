"""Who may do what with syncs: one rule per act, asked alike by the API, the admin and the dashboard.

Seeing is scoping: a user sees the runs of the organizations they see (their memberships, every one
for staff; `synclog.selectors`), and anything else is "not found". Acting needs a permission on top,
and each act's rule is defined here once: starting and cancelling a run need `synclog.trigger_sync`,
whoever asks and from wherever; syncing every organization at once and allowing a mass deletion
(`allowMassDelete`) are staff acts on top of that. The admin's model acts on organizations and
connections are the mirror's (`mirror.permissions`).
"""

TRIGGER_SYNC = "synclog.trigger_sync"


def can_trigger_sync(user) -> bool:
    """Start a sync run, read or write (an inactive user has no permission at all)."""
    return user.has_perm(TRIGGER_SYNC)


def can_cancel_sync(user) -> bool:
    """Cancel a queued or running run: whoever may start one may stop one."""
    return can_trigger_sync(user)


def can_sync_every_organization(user) -> bool:
    """Start runs of every organization at once (`organizationId: "all"`): staff only, as staff see
    every organization."""
    return bool(user.is_staff and can_trigger_sync(user))


def can_allow_mass_delete(user) -> bool:
    """Let a full read apply deletions beyond the mass-deletion guard (`allowMassDelete`): staff only."""
    return bool(user.is_staff and can_trigger_sync(user))
