"""REST API of the mirror: organizations and their PEMS read connection.

Who sees what: a user sees the organizations they are a member of, staff see every one. An
organization out of reach answers 404 (no leaking which codes exist); a visible one the user may
not change answers 403. Each act asks its one rule in `mirror.permissions`, as the admin does
(view-only staff can only look). Codes are found in any case (the model normalizes them). The
connection's `secret` is write-only: accepted, never returned.
"""

from collections.abc import Callable
from typing import NoReturn, TypeVar

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, PermissionDenied, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from mirror.models import ApiConfiguration, Organization
from mirror.permissions import (
    can_change_connection,
    can_change_organization,
    can_create_organization,
    can_view_connection,
)
from mirror.selectors import organization_get_visible, organizations_visible_to
from mirror.services import organization_create, organization_update, read_connection_put
from pfasync.api import ApiView, InputSerializer, error_responses

T = TypeVar("T")

# --- Who sees what ----------------------------------------------------------------------------


def visible_organization_or_404(user, key: str) -> Organization:
    """The organization with UUID or code `key` among those `user` sees; a 404 otherwise."""
    try:
        return organization_get_visible(user=user, key=key)
    except Organization.DoesNotExist as missing:
        raise NotFound(str(missing)) from None


def require(allowed: bool, action: str) -> None:
    """A 403 unless the act's rule (`mirror.permissions`, the one the admin asks too) allowed it."""
    if not allowed:
        raise PermissionDenied(f"Only staff with the permission to {action} may do so.")


def raise_model_errors(error: DjangoValidationError, serializer: serializers.Serializer) -> NoReturn:
    """Re-raise a model's full_clean() error as a 400 naming the API's (camelCase) fields."""
    api_name = {field.source: name for name, field in serializer.fields.items()}
    raise ValidationError(
        {api_name.get(field, "nonFieldErrors"): messages for field, messages in error.message_dict.items()}
    ) from None


def input_apply(
    request: Request, serializer_class: type[serializers.Serializer], action: Callable[..., T], **arguments
) -> T:
    """`action(**arguments)` with the request body's fields, validated by `serializer_class`; a 400
    for a body that does not validate or a model that does not (`raise_model_errors`)."""
    serializer = serializer_class(data=request.data)
    serializer.is_valid(raise_exception=True)
    try:
        return action(**arguments, **serializer.validated_data)
    except DjangoValidationError as error:
        raise_model_errors(error, serializer)


# --- Serializers --------------------------------------------------------------------------------


class OrganizationCreateInputSerializer(InputSerializer):
    code = serializers.CharField(max_length=32)
    name = serializers.CharField(max_length=200)
    isActive = serializers.BooleanField(source="is_active", default=True)
    syncEnabled = serializers.BooleanField(source="sync_enabled", default=True)


class OrganizationUpdateInputSerializer(InputSerializer):
    code = serializers.CharField(max_length=32, required=False)
    name = serializers.CharField(max_length=200, required=False)
    isActive = serializers.BooleanField(source="is_active", required=False)
    syncEnabled = serializers.BooleanField(source="sync_enabled", required=False)


class OrganizationOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    code = serializers.CharField()
    name = serializers.CharField()
    isActive = serializers.BooleanField(source="is_active")
    syncEnabled = serializers.BooleanField(source="sync_enabled")
    createdAt = serializers.DateTimeField(source="created_at")
    updatedAt = serializers.DateTimeField(source="updated_at")


class OrganizationResponseSerializer(serializers.Serializer):
    success = serializers.BooleanField()
    organization = OrganizationOutputSerializer()


class ConnectionInputSerializer(InputSerializer):
    """A PUT: `baseUrl` and `tenant` are required, and `timeZone` when the connection is created; other
    fields left out keep their current value."""

    baseUrl = serializers.URLField(
        source="base_url", max_length=500, help_text="https:// (http:// only where PEMS_ALLOW_HTTP=true)."
    )
    endpoint = serializers.ChoiceField(choices=ApiConfiguration.Endpoint.choices, required=False)
    tenant = serializers.CharField(max_length=100)
    pemsOrganizationCode = serializers.CharField(
        source="pems_organization_code", max_length=32, required=False, allow_blank=True
    )
    authType = serializers.ChoiceField(source="auth_type", choices=ApiConfiguration.AuthType.choices, required=False)
    username = serializers.CharField(max_length=150, required=False, allow_blank=True)
    secret = serializers.CharField(
        write_only=True,
        required=False,
        allow_blank=True,
        trim_whitespace=False,
        help_text="Password or API key; write-only. Blank or left out keeps the stored one, except when "
        "baseUrl, tenant, username or authType change: then it is required again. No leading or trailing "
        "whitespace, no control characters.",
    )
    gridName = serializers.CharField(source="grid_name", max_length=64, required=False)
    gridId = serializers.CharField(source="grid_id", max_length=32, required=False)
    pageSize = serializers.IntegerField(source="page_size", min_value=1, max_value=50_000, required=False)
    requestTimeout = serializers.FloatField(source="request_timeout", min_value=1.0, max_value=900.0, required=False)
    timeZone = serializers.CharField(
        source="time_zone",
        max_length=64,
        required=False,
        help_text="IANA zone of the tenant, e.g. America/Chicago. Required when the connection is created.",
    )


class ConnectionOutputSerializer(serializers.Serializer):
    """The read connection as stored, without its secret (only whether one is set)."""

    id = serializers.UUIDField()
    organizationId = serializers.UUIDField(source="organization_id")
    baseUrl = serializers.CharField(source="base_url")
    endpoint = serializers.CharField()
    tenant = serializers.CharField()
    pemsOrganizationCode = serializers.CharField(source="pems_organization_code")
    authType = serializers.CharField(source="auth_type")
    username = serializers.CharField()
    hasSecret = serializers.SerializerMethodField()
    gridName = serializers.CharField(source="grid_name")
    gridId = serializers.CharField(source="grid_id")
    pageSize = serializers.IntegerField(source="page_size")
    requestTimeout = serializers.FloatField(source="request_timeout")
    timeZone = serializers.CharField(source="time_zone")
    firstSyncAt = serializers.DateTimeField(source="first_sync_at", allow_null=True)
    lastSyncAt = serializers.DateTimeField(source="last_sync_at", allow_null=True)
    lastSyncRecordCount = serializers.IntegerField(source="last_sync_record_count")
    totalSyncRecordCount = serializers.IntegerField(source="total_sync_record_count")
    updatedAt = serializers.DateTimeField(source="updated_at")

    def get_hasSecret(self, configuration: ApiConfiguration) -> bool:  # noqa: N802 (API field name)
        return bool(configuration.secret)


class ConnectionResponseSerializer(serializers.Serializer):
    success = serializers.BooleanField()
    connection = ConnectionOutputSerializer()


# --- Views ----------------------------------------------------------------------------------------


class OrganizationListApi(ApiView):
    """List the organizations the user sees; staff create new ones."""

    output_serializer_class: type[serializers.Serializer] = OrganizationOutputSerializer

    def organizations_for(self, user) -> QuerySet[Organization]:
        """The listed queryset; the sync app's subclass annotates each organization's last run."""
        return organizations_visible_to(user)

    def get(self, request: Request) -> Response:
        organizations = self.organizations_for(request.user)
        return Response({"success": True, "organizations": self.output_serializer_class(organizations, many=True).data})

    @extend_schema(
        request=OrganizationCreateInputSerializer,
        responses={201: OrganizationResponseSerializer, **error_responses(400, 401, 403)},
    )
    def post(self, request: Request) -> Response:
        require(can_create_organization(request.user), "create organizations")
        organization = input_apply(request, OrganizationCreateInputSerializer, organization_create)
        return Response(
            {"success": True, "organization": OrganizationOutputSerializer(organization).data},
            status=status.HTTP_201_CREATED,
        )


class OrganizationDetailApi(ApiView):
    """One organization (by UUID or code); staff edit it."""

    @extend_schema(responses={200: OrganizationResponseSerializer, **error_responses(401, 404)})
    def get(self, request: Request, key: str) -> Response:
        organization = visible_organization_or_404(request.user, key)
        return Response({"success": True, "organization": OrganizationOutputSerializer(organization).data})

    @extend_schema(
        request=OrganizationUpdateInputSerializer,
        responses={200: OrganizationResponseSerializer, **error_responses(400, 401, 403, 404)},
    )
    def patch(self, request: Request, key: str) -> Response:
        organization = visible_organization_or_404(request.user, key)
        require(can_change_organization(request.user), "edit organizations")
        organization = input_apply(
            request, OrganizationUpdateInputSerializer, organization_update, organization=organization
        )
        return Response({"success": True, "organization": OrganizationOutputSerializer(organization).data})


class ReadConnectionApi(ApiView):
    """The organization's PEMS read connection (staff only; the secret is write-only)."""

    @extend_schema(responses={200: ConnectionResponseSerializer, **error_responses(401, 403, 404)})
    def get(self, request: Request, key: str) -> Response:
        organization = visible_organization_or_404(request.user, key)
        require(can_view_connection(request.user), "see PEMS connections")
        configuration = organization.api_configurations.filter(usage=ApiConfiguration.Usage.READ).first()
        if configuration is None:
            raise NotFound(f"Organization {organization.code} has no PEMS read connection yet.")
        return Response({"success": True, "connection": ConnectionOutputSerializer(configuration).data})

    @extend_schema(
        request=ConnectionInputSerializer,
        responses={200: ConnectionResponseSerializer, **error_responses(400, 401, 403, 404)},
    )
    def put(self, request: Request, key: str) -> Response:
        organization = visible_organization_or_404(request.user, key)
        exists = organization.api_configurations.filter(usage=ApiConfiguration.Usage.READ).exists()
        require(can_change_connection(request.user, creating=not exists), "change PEMS connections")
        configuration = input_apply(request, ConnectionInputSerializer, read_connection_put, organization=organization)
        return Response({"success": True, "connection": ConnectionOutputSerializer(configuration).data})
