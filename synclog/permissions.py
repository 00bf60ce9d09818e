"""Who may do what with syncs: one rule per act, asked alike by the API, the admin and the dashboard.

Seeing is scoping: a user sees the runs of the organizations they see (their memberships, every one
for staff; `synclog.selectors`), and anything else is "not found". Acting needs a permission on top: starting and
cancelling a run need `synclog.trigger_sync`, whoever asks and from wherever. The admin's model
acts (enable or disable sync, edit or test a connection) need the model's change permission, which
the admin itself checks; view-only staff can only look.
"""

TRIGGER_SYNC = "synclog.trigger_sync"


def can_trigger_sync(user) -> bool:
    """Start a sync run, or cancel one (an inactive user has no permission at all)."""
    return user.has_perm(TRIGGER_SYNC)
