"""A planner's edit of a PFA record (`PfaModification`): its states, the moves between them, and the
one compare-and-set that makes each move."""

from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from mirror.models.organization import Organization
from mirror.models.pfa import PfaMirror


class TransitionNotAllowed(ValueError):
    """`PfaModification.TRANSITIONS` has no such state change: a mistake in the code that asks for it."""


class ModificationStateChanged(Exception):
    """A modification was no longer in the state a transition expected: someone moved it first."""


class PfaModificationQuerySet(models.QuerySet):
    def transition(self, *, from_states: Iterable[str], to_state: str, **fields: Any) -> int:
        """Move this queryset's modifications that are in one of `from_states` to `to_state`, setting
        `fields` too, in one conditional UPDATE; returns how many moved (the others were in another
        state: moved meanwhile by someone else, or never in those states). TransitionNotAllowed if
        `PfaModification.TRANSITIONS` does not allow one of `from_states` to `to_state`.

        The only way a modification's state changes once it exists: `PfaModification.transition`
        moves one. `finished_at` follows the state unless given: now when it ends
        (`PfaModification.ENDED_STATES`), cleared otherwise.
        """
        from_states = PfaModification.check_transition(from_states, to_state)
        values = PfaModification.transition_fields(to_state, fields)
        return self.filter(state__in=from_states).update(state=to_state, **values)

    def shared(self) -> "PfaModificationQuerySet":
        """Committed modifications not yet written: what every reader of the merged view sees."""
        return self.filter(state__in=PfaModification.SHARED_STATES)

    def to_write(self) -> "PfaModificationQuerySet":
        """Committed modifications a write run takes: not those held because their record is marked
        deleted in PEMS (open again if a read finds it again; failed when it is purged)."""
        deleted = PfaMirror.objects.filter(
            organization_id=OuterRef("organization_id"), pfa_id=OuterRef("pfa_id"), deleted_at__isnull=False
        )
        return self.shared().filter(~Exists(deleted))

    def in_commit_order(self) -> "PfaModificationQuerySet":
        return self.order_by("committed_at", "id")


class PfaModification(models.Model):
    """One user's edit set on one PFA record, from a private draft to written in PEMS.

    `changes` maps model field names to new values in their JSON form (dates `YYYY-MM-DD`,
    amounts as decimal strings, flags as booleans); `base_values` holds the mirror's values of the
    same fields when editing began, which a three-way merge compares against.
    """

    class State(models.TextChoices):
        DRAFT = "draft", "Draft"
        COMMITTED = "committed", "Committed"
        WRITING = "writing", "Writing"
        WRITTEN = "written", "Written"
        CONFLICT = "conflict", "Conflict"
        FAILED = "failed", "Failed"
        DISCARDED = "discarded", "Discarded"

    # Applied to the merged view every reader sees, in commit order.
    SHARED_STATES = (State.COMMITTED, State.WRITING)
    # Still open: in the overlay (drafts for their author), on their way to PEMS.
    OPEN_STATES = (State.DRAFT, State.COMMITTED, State.WRITING)
    # Nothing moves a modification out of these: the row stays as history.
    TERMINAL_STATES = (State.WRITTEN, State.FAILED, State.DISCARDED)
    # Not ended: held while their record is marked deleted in PEMS, failed when it is purged. A
    # conflict is neither open (nothing of it is shown or written) nor terminal (a planner resolves it).
    UNFINISHED_STATES = (*OPEN_STATES, State.CONFLICT)
    # `finished_at` is set on entering these: terminal, or waiting for a person.
    ENDED_STATES = (*TERMINAL_STATES, State.CONFLICT)
    # Every allowed state change, and who makes it (mirror.delta but where said). Any other is refused.
    TRANSITIONS: dict[str, tuple[str, ...]] = {
        # Committed or discarded by its author (`drafts_commit`, `drafts_discard`, `draft_save` when
        # every field is set back); failed when its record is purged (`modifications_fail_purged`).
        State.DRAFT: (State.COMMITTED, State.DISCARDED, State.FAILED),
        # Taken by a write run (`modification_writing`); failed when its record is purged.
        State.COMMITTED: (State.WRITING, State.FAILED),
        # Taken again by a later run when a dead worker left it writing; back to committed when PEMS
        # cannot be reached (`modification_requeue`); the PATCH's outcome (`modification_written`,
        # `modification_conflicted`, `modification_failed`); failed when its record is purged.
        State.WRITING: (State.WRITING, State.COMMITTED, State.WRITTEN, State.CONFLICT, State.FAILED),
        # Resolved by a planner (`conflict_resolve`: committed again, or discarded); failed when its
        # record is purged.
        State.CONFLICT: (State.COMMITTED, State.DISCARDED, State.FAILED),
        State.WRITTEN: (),
        State.FAILED: (),
        State.DISCARDED: (),
    }

    id = models.BigAutoField(primary_key=True)
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="pfa_modifications")
    pfa_id = models.CharField(max_length=64)
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="pfa_modifications"
    )
    changes = models.JSONField(default=dict)
    base_version = models.PositiveIntegerField(help_text="The mirror row's version when editing began.")
    base_record_id = models.BigIntegerField(null=True, blank=True, help_text="PEMS's recordid when editing began.")
    base_values = models.JSONField(default=dict)
    change_reason = models.TextField(blank=True)
    state = models.CharField(max_length=16, choices=State, default=State.DRAFT)
    error_message = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    committed_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(
        null=True, blank=True, help_text="When it was written, discarded, or ended in conflict or failure."
    )
    written_record_id = models.BigIntegerField(
        null=True, blank=True, help_text="PEMS's recordid after this modification was written."
    )
    conflict = models.JSONField(
        default=dict, blank=True, help_text="Per conflicting field: its base, mine and theirs (PEMS's)."
    )

    objects = PfaModificationQuerySet.as_manager()

    class Meta:
        db_table = "pfa_modification"
        verbose_name = "PFA modification"
        permissions = [("edit_pfa_records", "Can edit PFA records")]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "pfa_id", "author"],
                condition=Q(state="draft"),
                name="pfa_modification_one_draft_per_author",
            ),
        ]
        indexes = [
            models.Index(
                fields=["organization", "pfa_id", "committed_at"],
                condition=Q(state__in=["draft", "committed", "writing"]),
                name="pfa_modification_open",
            ),
            models.Index(fields=["organization", "state"], name="pfa_modification_org_state"),
        ]

    def __str__(self) -> str:
        return f"{self.pfa_id} by {self.author or 'a deleted user'} ({self.state})"

    @classmethod
    def check_transition(cls, from_states: Iterable[str], to_state: str) -> tuple[str, ...]:
        """`from_states` as a tuple; TransitionNotAllowed unless each may move to `to_state`."""
        from_states = tuple(from_states)
        refused = [state for state in from_states if to_state not in cls.TRANSITIONS.get(state, ())]
        if refused or not from_states:
            raise TransitionNotAllowed(
                f"A PFA modification cannot go from {', '.join(refused) or 'no state'} to {to_state}."
            )
        return from_states

    @classmethod
    def transition_fields(cls, to_state: str, fields: dict[str, Any]) -> dict[str, Any]:
        """The columns a transition to `to_state` writes besides the state: `fields`, `updated_at` and,
        unless given, `finished_at` (now when the modification ends, cleared otherwise)."""
        now = timezone.now()
        return {
            "updated_at": now,
            "finished_at": now if to_state in cls.ENDED_STATES else None,
            **fields,
        }

    def transition(
        self,
        *,
        from_states: Iterable[str],
        to_state: str,
        among: "PfaModificationQuerySet | None" = None,
        **fields: Any,
    ) -> None:
        """Move this modification from one of `from_states` to `to_state`, setting `fields` too
        (`PfaModificationQuerySet.transition`, on this row of `among` if given: e.g. `to_write()`).
        ModificationStateChanged if it was not in those states (or not among them), and then
        nothing changes, in the database or in memory."""
        from_states = tuple(from_states)
        values = self.transition_fields(to_state, fields)  # its timestamps, for memory as for the row
        rows = (PfaModification.objects.all() if among is None else among).filter(pk=self.pk)
        if not rows.transition(from_states=from_states, to_state=to_state, **values):
            raise ModificationStateChanged(
                f"Modification {self.pk} is not {' or '.join(from_states)} (any more): not moved to {to_state}."
            )
        self.state = to_state
        for name, value in values.items():
            setattr(self, name, value)
