"""Project-wide pieces of the REST API: the one error shape (its schema and the handler that answers
every error in it), strict requests (the JSON body parser with its size limit, the base input
serializer and the base view; the parser is in `pfasync.parsers`), the JSON 404 for unknown paths, and the docs page
(`pfasync.permissions` says who may read it).

Every error answers `{"success": false, "error": CODE, "message": ...}` through `exception_handler`
(wired as REST_FRAMEWORK["EXCEPTION_HANDLER"]); the apps' views describe theirs with `error_responses`.
A refused token answers TOKEN_EXPIRED when it is only too old, TOKEN_INVALID otherwise; no token, UNAUTHORIZED.

Strict requests: every view is an `ApiView` (or takes `StrictRequestMixin`), which refuses query
parameters its `query_serializer_class` does not declare and path values with a NUL or a lone
surrogate; every input serializer is an `InputSerializer`, which refuses keys it does not declare and
words a bad date and a bad choice the same way everywhere; `JsonParser` refuses a body over
API_MAX_BODY_BYTES (413) and any NUL or lone surrogate in it (400 naming where).
"""

import logging
from collections.abc import Iterable, Mapping

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404, HttpResponseBase
from django.urls import reverse
from drf_spectacular.utils import OpenApiResponse, extend_schema
from drf_spectacular.views import SpectacularSwaggerView
from rest_framework import exceptions, serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework.views import exception_handler as drf_exception_handler
from rest_framework_simplejwt.exceptions import AuthenticationFailed as TokenRefused
from rest_framework_simplejwt.exceptions import ExpiredTokenError

from pfasync.parsers import printable, text_problem

logger = logging.getLogger(__name__)

# --- Errors -------------------------------------------------------------------------------------

ERROR_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    406: "NOT_ACCEPTABLE",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    429: "THROTTLED",
    503: "SERVICE_UNAVAILABLE",
}


class ApiError(exceptions.APIException):
    """An error with its own code and extra keys in the body (e.g. the active run of a 409)."""

    def __init__(self, *, status_code: int, error: str, message: str, **extra):
        super().__init__(detail=message)
        self.status_code = status_code
        self.error = error
        self.extra = extra


def exception_handler(exc: Exception, context: dict) -> Response:
    """DRF's handler (headers, rollback), with every error answered in the one JSON shape."""
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is None:
        logger.exception("Unhandled error in %s", context.get("view").__class__.__name__, exc_info=exc)
        return Response(
            {"success": False, "error": "SERVER_ERROR", "message": "Internal server error."},
            status=status.HTTP_500_INTERNAL_SERVER_ERROR,
        )
    if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
        # DRF answers 403 on views without an authenticator (login, refresh); a bad credential is a 401.
        response.status_code = status.HTTP_401_UNAUTHORIZED
        response.headers.setdefault("WWW-Authenticate", 'Bearer realm="api"')
    body = {"success": False, "error": _error_code(exc, response.status_code), "message": _message(exc.detail)}
    if isinstance(exc, exceptions.ValidationError):
        fields = exc.detail if isinstance(exc.detail, dict) else {"nonFieldErrors": exc.detail}
        body["fields"] = {name: _messages(errors) for name, errors in fields.items()}
        body["message"] = "Invalid input: " + "; ".join(f"{name}: {' '.join(m)}" for name, m in body["fields"].items())
    if isinstance(exc, ApiError):
        body.update(exc.extra)
    response.data = body
    return response


def _error_code(exc: exceptions.APIException, status_code: int) -> str:
    if isinstance(exc, ApiError):
        return exc.error
    if isinstance(exc, exceptions.ValidationError):
        return "VALIDATION_ERROR"
    if isinstance(exc, TokenRefused):  # a token was sent and refused: refresh it, or log in again
        return "TOKEN_EXPIRED" if isinstance(exc.__cause__, ExpiredTokenError) else "TOKEN_INVALID"
    if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
        return "UNAUTHORIZED"
    if isinstance(exc, exceptions.ParseError):
        return "MALFORMED_REQUEST"
    return ERROR_CODES.get(status_code) or str(exc.default_code).upper()


def _message(detail) -> str:
    if isinstance(detail, dict):  # simplejwt's token errors: {"detail": ..., "code": ..., "messages": [...]}
        return str(detail.get("detail") or next(iter(detail.values()), ""))
    if isinstance(detail, list):
        return " ".join(str(item) for item in detail)
    return str(detail)


def _messages(errors) -> list[str]:
    if isinstance(errors, dict):  # a nested serializer's errors, flattened to "field: message"
        return [f"{name}: {message}" for name, nested in errors.items() for message in _messages(nested)]
    if isinstance(errors, list):
        return [message for error in errors for message in _messages(error)]
    return [str(errors)]


class ErrorSerializer(serializers.Serializer):
    """Every error answer has this shape; validation errors add `fields` (API field -> messages)."""

    success = serializers.BooleanField(default=False)
    error = serializers.CharField(help_text="A stable code: VALIDATION_ERROR, UNAUTHORIZED, NOT_FOUND, ...")
    message = serializers.CharField()
    fields = serializers.DictField(child=serializers.ListField(child=serializers.CharField()), required=False)


def error_responses(*codes: int) -> dict[int, OpenApiResponse]:
    """Schema entries for the error answers of an operation (every one has the ErrorSerializer shape)."""
    described = {
        400: "Invalid input; `fields` names each invalid field.",
        401: "No access token (UNAUTHORIZED), an expired one (TOKEN_EXPIRED: refresh it) or another refused one "
        "(TOKEN_INVALID: log in again).",
        403: "Visible, but the user lacks the right to do this.",
        404: "Unknown, or not visible to this user.",
        409: "Conflicts with the current state.",
        413: "The body is over API_MAX_BODY_BYTES.",
    }
    # Every operation can answer 400: an unknown query parameter, or a NUL in a path value.
    codes = sorted({400, *codes})
    return {code: OpenApiResponse(ErrorSerializer, description=described[code]) for code in codes}


# --- Strict requests --------------------------------------------------------------------------

DATE_MESSAGE = "Must be a date as YYYY-MM-DD."
STRING_MESSAGE = "Must be a string."


def keys_refuse_unknown(keys: Iterable[str], accepted: Iterable[str], *, what: str = "field", **messages: str) -> None:
    """A 400 naming each key not `accepted`, with the accepted ones; `messages` words particular keys."""
    accepted = list(accepted)
    unknown = [key for key in keys if key not in accepted]
    if not unknown:
        return
    if accepted:
        default = f"Unknown {what}; accepted: {', '.join(accepted)}."
    else:
        default = f"Unknown {what}: none is accepted here."
    raise exceptions.ValidationError({printable(key): [messages.get(key, default)] for key in unknown})


def _choices_message(field: serializers.ChoiceField) -> str:
    valid = ", ".join(str(choice) for choice in field.choices).replace("{", "{{").replace("}", "}}")
    return '"{input}" is not a valid choice; valid: ' + valid + "."


class InputSerializer(serializers.Serializer):
    """The base of every input serializer (a body or a query string): a key it does not declare is a
    400 naming it and the accepted ones (one spelling per field), a text field takes a JSON string
    only, a bad date reads DATE_MESSAGE whatever made it bad, and a bad choice lists the valid ones. `unknown_key_messages` words
    particular unknown keys (e.g. a read-only field)."""

    unknown_key_messages: dict[str, str] = {}

    def get_fields(self) -> dict[str, serializers.Field]:
        fields = super().get_fields()
        for field in fields.values():
            if isinstance(field, serializers.DateField):
                field.error_messages.update(invalid=DATE_MESSAGE, datetime=DATE_MESSAGE)
            if isinstance(field, serializers.ChoiceField):
                field.error_messages["invalid_choice"] = _choices_message(field)
        return fields

    def to_internal_value(self, data) -> dict:
        if isinstance(data, Mapping):
            accepted = [name for name, field in self.fields.items() if not field.read_only]
            keys_refuse_unknown(data.keys(), accepted, **self.unknown_key_messages)
            if errors := self._not_strings(data):
                raise exceptions.ValidationError(errors)
        return super().to_internal_value(data)

    def _not_strings(self, data: Mapping) -> dict[str, list[str]]:
        """Text fields given something else than a JSON string (DRF's CharField would take 5 as "5")."""
        errors = {}
        for name, field in self.fields.items():
            value = data.get(name)
            if value is None or field.read_only:
                continue
            if isinstance(field, serializers.CharField) and not isinstance(value, str):
                errors[name] = [STRING_MESSAGE]
            child = getattr(field, "child", None)
            strings = isinstance(value, list) and all(isinstance(item, str) for item in value)
            if isinstance(child, serializers.CharField) and isinstance(value, list) and not strings:
                errors[name] = ["Each item must be a string."]
        return errors


def camel(name: str) -> str:
    """A model or path name as the API spells its fields (`pfa_id` -> `pfaId`)."""
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


class StrictRequestMixin:
    """Refuses, for every method, query parameters `query_serializer_class` (an InputSerializer, or
    None for none) does not declare, a parameter given twice or empty, and path values holding a NUL
    or a lone surrogate: each a 400 naming the parameter. Checked after authentication, so a caller without a
    token learns nothing but the 401."""

    query_serializer_class: type[serializers.Serializer] | None = None

    def initial(self, request: Request, *args, **kwargs) -> None:
        super().initial(request, *args, **kwargs)
        problems = {
            camel(name): [problem]
            for name, value in kwargs.items()
            if isinstance(value, str) and (problem := text_problem(value))
        }
        if problems:
            raise exceptions.ValidationError(problems)
        query = request.query_params
        accepted = list(self.query_serializer_class().fields) if self.query_serializer_class else []
        keys_refuse_unknown(query.keys(), accepted, what="query parameter")
        repeated = {name: ["Give this parameter once."] for name in query if len(query.getlist(name)) > 1}
        if repeated:
            raise exceptions.ValidationError(repeated)
        # DRF reads an empty query value as a parameter left out: `ordering=` would order by the default.
        empty = {name: ["May not be empty: leave the parameter out instead."] for name in query if query[name] == ""}
        if empty:
            raise exceptions.ValidationError(empty)


class ApiView(StrictRequestMixin, APIView):
    """The base of every API view (see StrictRequestMixin)."""


@extend_schema(exclude=True)
class NotFoundApi(APIView):
    """Any other path under /api/: a JSON 404 instead of Django's HTML page."""

    authentication_classes = []
    permission_classes = [AllowAny]

    def dispatch(self, request, *args, **kwargs):
        return super().dispatch(request)

    def http_method_not_allowed(self, request, *args, **kwargs):
        raise exceptions.NotFound()

    def get(self, request: Request) -> Response:
        raise exceptions.NotFound()


# --- The API's docs ----------------------------------------------------------------------------


def schema_strict_bodies(result: dict, generator, **kwargs) -> dict:
    """drf-spectacular postprocessing hook: every request body's object schema (an InputSerializer,
    which refuses keys it does not declare) says `additionalProperties: false`, and every operation
    that takes a body may answer 413, so the published schema tells clients, and the fuzz tests, what
    the API does."""
    components = result.get("components", {}).get("schemas", {})
    pending = []
    for operations in result.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.get("responses", {})
            if "requestBody" in operation and "400" in responses:  # any body may be over the limit
                responses.setdefault("413", {**responses["400"], "description": "The body is over API_MAX_BODY_BYTES."})
            for content in operation.get("requestBody", {}).get("content", {}).values():
                pending.append(content.get("schema", {}))
    seen: set[str] = set()
    while pending:
        schema = pending.pop()
        if ref := schema.get("$ref"):
            name = ref.rsplit("/", 1)[-1]
            if name not in seen and name in components:
                seen.add(name)
                pending.append(components[name])
            continue
        if schema.get("type") == "object" and "properties" in schema:
            schema.setdefault("additionalProperties", False)
            pending.extend(schema["properties"].values())
        pending.extend(schema.get("allOf", []))
    return result


class ApiDocsView(SpectacularSwaggerView):
    """The Swagger UI page. Like the schema it needs a signed-in user (unless API_DOCS_PUBLIC); a
    browser without one is sent to the admin's login, whose session then opens it."""

    def handle_exception(self, exc: Exception) -> HttpResponseBase:
        if isinstance(exc, exceptions.NotAuthenticated):
            return redirect_to_login(self.request.get_full_path(), reverse("admin:login"))
        return super().handle_exception(exc)
