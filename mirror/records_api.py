"""REST API of the PFA records: the merged list, one record, planners' drafts, KPIs.

Records are read as the caller sees them: the mirror with every committed, unwritten modification
applied, and the caller's own drafts on top. Field names are the camelCase of the model's
(`forecastEndDate`, `monthlyRate`, `isDiscontinued`); dates are `YYYY-MM-DD`, amounts decimal
strings, flags booleans, in what is read and in what is written. Editing needs the permission
"Can edit PFA records" (`mirror.edit_pfa_records`); organizations are scoped as everywhere else.
"""

import re
from datetime import date
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field, inline_serializer
from rest_framework import serializers
from rest_framework.exceptions import NotFound, PermissionDenied, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from mirror import delta
from mirror.api import visible_organization_or_404
from mirror.codec import datetime_to_json, json_value, value_to_json
from mirror.models import EDITABLE_FIELDS, PfaMirror, PfaModification
from mirror.permissions import can_edit_records, can_resolve_conflicts
from mirror.records_cursor import CursorInvalid, cursor_decode, cursor_encode
from mirror.selectors import (
    MODIFICATION_STATE_FILTERS,
    RECORD_COLUMNS,
    RECORD_ORDERINGS,
    RecordFilters,
    conflicts_list,
    kpis_get,
    modification_get_visible,
    record_get,
    records_count,
    records_list,
)
from pfasync.api import DATE_MESSAGE, ApiError, ApiView, InputSerializer, camel, error_responses

# The longest change reason a planner may give (characters).
CHANGE_REASON_MAX = 2000


# API name <-> model field name, for every field a record shows.
_API_NAMES = {name: camel(name) for name in (*RECORD_COLUMNS, *EDITABLE_FIELDS)}
_FIELD_NAMES = {api: name for name, api in _API_NAMES.items()}


def _api_values(values: dict[str, Any]) -> dict[str, Any]:
    """Model field name -> value, as API name -> JSON value."""
    return {camel(name): value_to_json(name, value) for name, value in values.items()}


def record_output(row: dict[str, Any]) -> dict[str, Any]:
    output = {_API_NAMES[name]: value_to_json(name, row[name]) for name in RECORD_COLUMNS}
    output["changes"] = {
        _API_NAMES[name]: {
            **change,
            "pems": value_to_json(name, change["pems"]),
            "value": value_to_json(name, change["value"]),
        }
        for name, change in row["changes"].items()
    }
    output["conflict"] = bool(row["conflict_ids"])
    output["conflictIds"] = row["conflict_ids"]
    return output


def modification_output(modification: PfaModification) -> dict[str, Any]:
    return {
        "id": modification.pk,
        "state": modification.state,
        "by": modification.author.get_username() if modification.author else None,
        "changes": _api_values(modification.changes),
        "baseValues": _api_values(modification.base_values),
        "baseVersion": modification.base_version,
        "baseRecordId": modification.base_record_id,
        "changeReason": modification.change_reason,
        "errorMessage": (
            # The stored message names fields for people; the API names them as it does everywhere.
            delta.conflict_message(modification.conflict, label=camel)
            if modification.state == PfaModification.State.CONFLICT and modification.conflict
            else modification.error_message
        ),
        "createdAt": datetime_to_json(modification.created_at),
        "committedAt": datetime_to_json(modification.committed_at),
        "finishedAt": datetime_to_json(modification.finished_at),
    }


def _require_edit(user, *, may=can_edit_records) -> None:
    if not may(user):
        raise PermissionDenied("Editing PFA records needs the permission 'Can edit PFA records'.")


def _model_errors(error: DjangoValidationError) -> ValidationError:
    """A delta-layer ValidationError as a 400 naming the API's fields."""
    if hasattr(error, "error_dict"):
        return ValidationError({_API_NAMES.get(name, name): messages for name, messages in error.message_dict.items()})
    return ValidationError(error.messages[0] if len(error.messages) == 1 else error.messages)


# --- The list -------------------------------------------------------------------------------------

_ORDERINGS = [camel(name) for name in RECORD_ORDERINGS] + ["-" + camel(name) for name in RECORD_ORDERINGS]


class RecordListInputSerializer(InputSerializer):
    category = serializers.CharField(required=False)
    source = serializers.CharField(required=False)
    dor = serializers.CharField(required=False)
    # `class` is a Python keyword: the field is renamed when the serializer is built (below).
    pfa_class = serializers.CharField(required=False)
    forecastFrom = serializers.DateField(required=False, input_formats=["iso-8601"])
    forecastTo = serializers.DateField(required=False, input_formats=["iso-8601"])
    search = serializers.CharField(required=False, max_length=100)
    state = serializers.ChoiceField(
        choices=MODIFICATION_STATE_FILTERS,
        required=False,
        help_text="draft: records with a draft of the caller's; committed: with an edit waiting to be written "
        "(anyone's); conflict: with an edit in conflict with PEMS (anyone's).",
    )
    ordering = serializers.ChoiceField(choices=_ORDERINGS, required=False, default="pfaId")
    cursor = serializers.CharField(required=False, max_length=1000)
    limit = serializers.IntegerField(required=False, min_value=1, max_value=500, default=100)
    includeCount = serializers.BooleanField(
        required=False, default=False, help_text="true: answer `total`, the exact count over all pages (it costs)."
    )

    def get_fields(self):
        fields = super().get_fields()
        fields["class"] = fields.pop("pfa_class")
        return fields


def _schema_field(name: str) -> serializers.Field:
    """The serializer field documenting a record column in the OpenAPI schema."""
    field = PfaMirror._meta.get_field(name)
    kind = field.get_internal_type()
    options = {"allow_null": field.null}
    if kind == "DecimalField":
        return serializers.CharField(help_text="A decimal string.", **options)
    if kind == "DateField":
        return serializers.DateField(**options)
    if kind == "DateTimeField":
        return serializers.DateTimeField(**options)
    if kind == "BooleanField":
        return serializers.BooleanField()
    if "Integer" in kind:
        return serializers.IntegerField(**options)
    return serializers.CharField()


class ChangeSerializer(serializers.Serializer):
    pems = serializers.JSONField(help_text="PEMS's value (the mirror's).")
    value = serializers.JSONField(help_text="The value the caller sees.")
    state = serializers.ChoiceField(choices=PfaModification.State.choices)
    by = serializers.CharField(allow_null=True)


PfaRecordSerializer = type(
    "PfaRecordSerializer",
    (serializers.Serializer,),
    {
        **{_API_NAMES[name]: _schema_field(name) for name in RECORD_COLUMNS},
        "changes": serializers.DictField(child=ChangeSerializer(), help_text="Each field that differs from PEMS."),
        "conflict": serializers.BooleanField(help_text="An edit of the record is in conflict with PEMS."),
        "conflictIds": serializers.ListField(
            child=serializers.IntegerField(), help_text="The modifications in conflict, in commit order."
        ),
    },
)


class RecordListApi(ApiView):
    """The organization's records as the caller sees them, filtered, ordered, a page at a time."""

    query_serializer_class = RecordListInputSerializer

    @extend_schema(
        operation_id="records_list",
        parameters=[
            RecordListInputSerializer,
            OpenApiParameter("class", OpenApiTypes.STR, description="Class code, exactly."),
        ],
        responses={
            200: inline_serializer(
                "PfaRecordPage",
                {
                    "success": serializers.BooleanField(),
                    "records": PfaRecordSerializer(many=True),
                    "nextCursor": serializers.CharField(allow_null=True),
                    "total": serializers.IntegerField(
                        required=False, help_text="With includeCount=true: the records over all pages."
                    ),
                },
            ),
            **error_responses(400, 401, 404),
        },
    )
    def get(self, request: Request, key: str) -> Response:
        organization = visible_organization_or_404(request.user, key)
        serializer = RecordListInputSerializer(data=request.query_params)
        serializer.is_valid(raise_exception=True)
        params = serializer.validated_data
        ordering = params["ordering"]
        field = _FIELD_NAMES[ordering.lstrip("-")]
        after = None
        if "cursor" in params:
            try:
                after = cursor_decode(cursor=params["cursor"], ordering=ordering, field=field)
            except CursorInvalid:
                raise ValidationError(
                    {"cursor": ["Not a cursor of this list: pass the nextCursor of the previous page, same ordering."]}
                ) from None
        filters = RecordFilters(
            category=params.get("category"),
            source=params.get("source"),
            dor=params.get("dor"),
            pfa_class=params.get("class"),
            forecast_from=params.get("forecastFrom"),
            forecast_to=params.get("forecastTo"),
            search=params.get("search"),
            state=params.get("state"),
        )
        page = records_list(
            organization=organization,
            user=request.user,
            filters=filters,
            ordering=("-" if ordering.startswith("-") else "") + field,
            after=after,
            limit=params["limit"],
        )
        next_cursor = page.next_cursor and cursor_encode(ordering=ordering, field=field, after=page.next_cursor)
        body = {"success": True, "records": [record_output(row) for row in page.records], "nextCursor": next_cursor}
        if params["includeCount"]:
            body["total"] = records_count(organization=organization, user=request.user, filters=filters)
        return Response(body)


# --- One record and its draft -----------------------------------------------------------------------


_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


class _EditedValue(serializers.Field):
    """An edited value as sent: the delta layer types and checks it (by the rules PEMS values are
    typed by); the subclasses tell the schema what it takes (and a date's, so that a bad date has
    the one wording whatever made it bad)."""

    def to_internal_value(self, data: Any) -> Any:
        return data


@extend_schema_field({"type": "string", "format": "date", "nullable": True})
class _EditedDate(_EditedValue):
    """A date is YYYY-MM-DD and a real day, or the one message for a bad date, whatever made it bad."""

    def to_internal_value(self, data: Any) -> Any:
        try:
            # fromisoformat alone also takes 20270201 and 2027-W05-1.
            if not (isinstance(data, str) and _ISO_DATE.fullmatch(data) and date.fromisoformat(data)):
                raise ValueError
        except ValueError:
            raise ValidationError(DATE_MESSAGE) from None
        return data


@extend_schema_field({"oneOf": [{"type": "string"}, {"type": "integer"}], "nullable": True})
class _EditedAmount(_EditedValue):
    pass


@extend_schema_field(OpenApiTypes.BOOL)
class _EditedFlag(_EditedValue):
    pass


@extend_schema_field(OpenApiTypes.STR)
class _EditedText(_EditedValue):
    pass


def _edited_field(name: str) -> serializers.Field:
    """An editable column as a body field, documented by its type."""
    kind = PfaMirror._meta.get_field(name).get_internal_type()
    kinds = {"DateField": _EditedDate, "DecimalField": _EditedAmount, "BooleanField": _EditedFlag}
    return kinds.get(kind, _EditedText)(required=False, allow_null=True)


class RecordValuesSerializer(InputSerializer):
    """The editable fields by their camelCase names, each optional (what a merge gives as `values`)."""

    # A key or PEMS bookkeeping field is refused in the words the delta layer uses for its names.
    unknown_key_messages = {
        camel(name): "Cannot be edited: it is a key or PEMS bookkeeping." for name in delta.READ_ONLY_FIELDS
    }

    def get_fields(self) -> dict[str, serializers.Field]:
        return {**{camel(name): _edited_field(name) for name in EDITABLE_FIELDS}, **super().get_fields()}


class RecordEditInputSerializer(RecordValuesSerializer):
    """Any editable field by its camelCase name, plus `changeReason`; the values are checked by the
    delta layer."""

    changeReason = serializers.CharField(
        required=False, allow_blank=True, allow_null=True, max_length=CHANGE_REASON_MAX, trim_whitespace=False
    )


class RecordDetailApi(ApiView):
    """One record as the caller sees it; PATCH saves the caller's draft of it."""

    @extend_schema(
        operation_id="records_retrieve",
        responses={
            200: inline_serializer(
                "PfaRecordDetail",
                {
                    "success": serializers.BooleanField(),
                    "record": PfaRecordSerializer(),
                    "data": serializers.DictField(help_text="The raw PEMS row."),
                    "modifications": serializers.ListField(child=serializers.DictField()),
                },
            ),
            **error_responses(401, 404),
        },
    )
    def get(self, request: Request, key: str, pfa_id: str) -> Response:
        organization = visible_organization_or_404(request.user, key)
        try:
            row, data, modifications = record_get(organization=organization, user=request.user, pfa_id=pfa_id)
        except PfaMirror.DoesNotExist:
            raise NotFound(f"PFA {pfa_id!r} not found in {organization.code}.") from None
        return Response(
            {
                "success": True,
                "record": record_output(row),
                "data": data,
                "modifications": [modification_output(m) for m in modifications],
            }
        )

    @extend_schema(
        request=RecordEditInputSerializer,
        responses={
            200: inline_serializer(
                "PfaRecordEdited",
                {
                    "success": serializers.BooleanField(),
                    "record": PfaRecordSerializer(),
                    "modification": serializers.DictField(),
                },
            ),
            **error_responses(400, 401, 403, 404),
        },
    )
    def patch(self, request: Request, key: str, pfa_id: str) -> Response:
        organization = visible_organization_or_404(request.user, key)
        _require_edit(request.user)
        if not isinstance(request.data, dict):
            raise ValidationError('Send a JSON object of the fields to change, e.g. {"monthlyRate": "5200.00"}.')
        serializer = RecordEditInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        values = dict(serializer.validated_data)
        reason = values.pop("changeReason", None)
        values = {_FIELD_NAMES[name]: value for name, value in values.items()}
        if not values:
            raise ValidationError('Send at least one field to change, e.g. {"monthlyRate": "5200.00"}.')
        try:
            draft = delta.draft_save(
                organization=organization, pfa_id=pfa_id, user=request.user, values=values, change_reason=reason
            )
        except PfaMirror.DoesNotExist:
            raise NotFound(f"PFA {pfa_id!r} not found in {organization.code}.") from None
        except DjangoValidationError as error:
            raise _model_errors(error) from None
        row, _, _ = record_get(organization=organization, user=request.user, pfa_id=pfa_id)
        return Response({"success": True, "record": record_output(row), "modification": modification_output(draft)})


class DraftDiscardApi(ApiView):
    """Discard the caller's draft of one record (the row stays, `discarded`)."""

    @extend_schema(
        responses={
            200: inline_serializer("DraftDiscarded", {"success": serializers.BooleanField()}),
            **error_responses(401, 403, 404),
        }
    )
    def delete(self, request: Request, key: str, pfa_id: str) -> Response:
        organization = visible_organization_or_404(request.user, key)
        _require_edit(request.user)
        try:
            delta.draft_discard(organization=organization, user=request.user, pfa_id=pfa_id)
        except delta.NoDraft as missing:
            raise NotFound(str(missing)) from None
        return Response({"success": True})


class DraftsInputSerializer(InputSerializer):
    pfaIds = serializers.ListField(
        child=serializers.CharField(max_length=64),
        required=False,
        max_length=100_000,
        help_text="Left out: all of the caller's drafts in the organization.",
    )


def _drafts_act(request: Request, key: str, act) -> int:
    organization = visible_organization_or_404(request.user, key)
    _require_edit(request.user)
    serializer = DraftsInputSerializer(data=request.data)
    serializer.is_valid(raise_exception=True)
    return act(organization=organization, user=request.user, pfa_ids=serializer.validated_data.get("pfaIds"))


class DraftsCommitApi(ApiView):
    """Commit the caller's drafts: they become shared and wait to be written to PEMS, in commit order."""

    @extend_schema(
        request=DraftsInputSerializer,
        responses={
            200: inline_serializer(
                "DraftsCommitted", {"success": serializers.BooleanField(), "committed": serializers.IntegerField()}
            ),
            **error_responses(400, 401, 403, 404),
        },
    )
    def post(self, request: Request, key: str) -> Response:
        return Response({"success": True, "committed": _drafts_act(request, key, delta.drafts_commit)})


class DraftsDiscardApi(ApiView):
    """Discard the caller's drafts (the rows stay, `discarded`)."""

    @extend_schema(
        request=DraftsInputSerializer,
        responses={
            200: inline_serializer(
                "DraftsDiscarded", {"success": serializers.BooleanField(), "discarded": serializers.IntegerField()}
            ),
            **error_responses(400, 401, 403, 404),
        },
    )
    def post(self, request: Request, key: str) -> Response:
        return Response({"success": True, "discarded": _drafts_act(request, key, delta.drafts_discard)})


# --- KPIs ---------------------------------------------------------------------------------------------


class KpisApi(ApiView):
    """The organization's KPIs per category and source, and its timeline bounds (from the
    materialized views, as of `refreshedAt`; null before their first refresh)."""

    @extend_schema(
        responses={
            200: inline_serializer(
                "PfaKpis",
                {
                    "success": serializers.BooleanField(),
                    "refreshedAt": serializers.DateTimeField(allow_null=True),
                    "summary": serializers.ListField(child=serializers.DictField()),
                    "timeline": serializers.DictField(),
                },
            ),
            **error_responses(401, 404),
        }
    )
    def get(self, request: Request, key: str) -> Response:
        organization = visible_organization_or_404(request.user, key)
        kpis = kpis_get(organization=organization)
        return Response(
            {
                "success": True,
                "refreshedAt": datetime_to_json(kpis.refreshed_at),
                "summary": [
                    {camel(name): json_value(value) for name, value in entry.items()} for entry in kpis.summary
                ],
                "timeline": {camel(name): json_value(value) for name, value in kpis.timeline.items()},
            }
        )


# --- Conflicts ----------------------------------------------------------------------------------------


class ConflictListApi(ApiView):
    """The organization's modifications in conflict with a change PEMS took meanwhile: per field,
    the base the edit began from, mine (the edit) and theirs (PEMS now)."""

    @extend_schema(
        responses={
            200: inline_serializer(
                "PfaConflicts",
                {
                    "success": serializers.BooleanField(),
                    "conflicts": serializers.ListField(child=serializers.DictField()),
                },
            ),
            **error_responses(401, 404),
        }
    )
    def get(self, request: Request, key: str) -> Response:
        organization = visible_organization_or_404(request.user, key)
        conflicts = conflicts_list(organization=organization)
        return Response({"success": True, "conflicts": [conflict_output(m) for m in conflicts]})


def conflict_output(modification: PfaModification) -> dict[str, Any]:
    return {
        "id": modification.pk,
        "pfaId": modification.pfa_id,
        "by": modification.author.get_username() if modification.author else None,
        "committedAt": datetime_to_json(modification.committed_at),
        "fields": {_API_NAMES.get(name, name): sides for name, sides in modification.conflict.items()},
    }


class ResolveInputSerializer(InputSerializer):
    resolution = serializers.ChoiceField(choices=delta.Resolution.CHOICES)
    values = RecordValuesSerializer(
        required=False,
        allow_null=True,
        help_text="For `merge`: the fields to commit (camelCase), in the records API's formats.",
    )


class ModificationResolveApi(ApiView):
    """Resolve a conflict: `keep_mine` commits the edit again on PEMS's current record, `take_pems`
    discards it, `merge` commits the given values instead."""

    @extend_schema(
        request=ResolveInputSerializer,
        responses={
            200: inline_serializer(
                "ConflictResolved", {"success": serializers.BooleanField(), "modification": serializers.DictField()}
            ),
            **error_responses(400, 401, 403, 404, 409),
        },
    )
    def post(self, request: Request, modification_id: int) -> Response:
        modification = modification_get_visible(user=request.user, modification_id=modification_id)
        if modification is None:
            raise NotFound(f"Modification {modification_id} not found.")
        _require_edit(request.user, may=can_resolve_conflicts)
        serializer = ResolveInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        values = serializer.validated_data.get("values")
        try:
            modification = delta.conflict_resolve(
                modification=modification,
                user=request.user,
                resolution=serializer.validated_data["resolution"],
                values=values and {_FIELD_NAMES[name]: value for name, value in values.items()},
            )
        except delta.NotInConflict as error:
            raise ApiError(status_code=409, error="NOT_IN_CONFLICT", message=str(error)) from None
        except DjangoValidationError as error:
            raise _model_errors(error) from None
        return Response({"success": True, "modification": modification_output(modification)})
