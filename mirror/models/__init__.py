"""What pfasync holds from PEMS: organizations and their PEMS connections (`organization`), the
mirrored PFA records and the delta layer's views of them (`pfa`), and planners' edits
(`modification`)."""

from mirror.models.modification import (
    ModificationStateChanged,
    PfaModification,
    PfaModificationQuerySet,
    TransitionNotAllowed,
)
from mirror.models.organization import (
    SECRET_BOUND_FIELDS,
    ApiConfiguration,
    Organization,
    pems_base_url_error,
    validate_organization_code,
    validate_time_zone,
)
from mirror.models.pfa import (
    EDITABLE_FIELDS,
    PFA_ALIASES,
    PFA_COLUMNS,
    PfaMergedLive,
    PfaMirror,
    PfaMirrorQuerySet,
    PfaOverlay,
    PfaRecordColumns,
    ViewRefresh,
    pems_column,
)

__all__ = [
    "EDITABLE_FIELDS",
    "PFA_ALIASES",
    "PFA_COLUMNS",
    "SECRET_BOUND_FIELDS",
    "ApiConfiguration",
    "ModificationStateChanged",
    "Organization",
    "PfaMergedLive",
    "PfaMirror",
    "PfaMirrorQuerySet",
    "PfaModification",
    "PfaModificationQuerySet",
    "PfaOverlay",
    "PfaRecordColumns",
    "TransitionNotAllowed",
    "ViewRefresh",
    "pems_base_url_error",
    "pems_column",
    "validate_organization_code",
    "validate_time_zone",
]
