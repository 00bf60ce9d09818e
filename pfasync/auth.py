"""Signing in to the REST API: log in (JWT access and refresh tokens, failed logins throttled),
refresh (rotating: a refresh token is spent once), log out (revoking the refresh token), and "me"
(who the token's user is and what they may do).

A refused token answers 401 `TOKEN_EXPIRED` when it was good but is past its lifetime (refresh it,
or for a refresh token log in again) and `TOKEN_INVALID` for anything else (log in again); a missing
one answers `UNAUTHORIZED` (`pfasync.api.exception_handler` names them).
"""

import hashlib

from django.contrib.auth import get_user_model
from drf_spectacular.contrib.rest_framework_simplejwt import SimpleJWTScheme
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import SimpleRateThrottle
from rest_framework.views import APIView
from rest_framework_simplejwt.exceptions import InvalidToken, TokenError
from rest_framework_simplejwt.serializers import TokenObtainPairSerializer, TokenRefreshSerializer
from rest_framework_simplejwt.settings import api_settings as jwt_settings
from rest_framework_simplejwt.tokens import RefreshToken
from rest_framework_simplejwt.views import TokenRefreshView

from mirror.permissions import can_edit_records, can_resolve_conflicts
from mirror.selectors import organizations_visible_to
from pfasync.api import ApiView, ErrorSerializer, InputSerializer, StrictRequestMixin, error_responses
from synclog.permissions import can_trigger_sync


class JWTScheme(SimpleJWTScheme):
    """The schema's bearer-token scheme for our authentication (drf-spectacular matches the class exactly)."""

    target_class = "pfasync.authentication.JWTAuthentication"


class LoginInputSerializer(InputSerializer):
    username = serializers.CharField(max_length=150)  # Django's own limit for a username
    password = serializers.CharField(trim_whitespace=False, max_length=1024)


class UserOutputSerializer(serializers.Serializer):
    """Who the user is and what they may do, each answer from the rule the API itself applies."""

    id = serializers.IntegerField()
    username = serializers.CharField()
    isStaff = serializers.BooleanField(source="is_staff")
    isSuperuser = serializers.BooleanField(source="is_superuser")
    canEdit = serializers.SerializerMethodField(help_text="Save, commit and discard drafts of records.")
    canResolve = serializers.SerializerMethodField(help_text="Resolve an edit in conflict with PEMS.")
    canTriggerSync = serializers.SerializerMethodField(help_text="Start or cancel a sync run.")
    organizations = serializers.SerializerMethodField(help_text="Codes of the organizations the user sees.")

    def get_canEdit(self, user) -> bool:  # noqa: N802 (API field name)
        return can_edit_records(user)

    def get_canResolve(self, user) -> bool:  # noqa: N802 (API field name)
        return can_resolve_conflicts(user)

    def get_canTriggerSync(self, user) -> bool:  # noqa: N802 (API field name)
        return can_trigger_sync(user)

    def get_organizations(self, user) -> list[str]:
        return list(organizations_visible_to(user).order_by("code").values_list("code", flat=True))


class LoginOutputSerializer(serializers.Serializer):
    access = serializers.CharField()
    refresh = serializers.CharField()
    user = UserOutputSerializer()


class LoginThrottle(SimpleRateThrottle):
    """Failed logins per key, at the rate of the throttle's scope (REST_FRAMEWORK's
    DEFAULT_THROTTLE_RATES). Each attempt counts as it is made, so guesses sent at once count too;
    a successful login is then forgotten (`forget`), so only failures add up."""

    def forget(self) -> None:
        if getattr(self, "key", None) is None:  # no rate, or nothing to key on: nothing was counted
            return
        history = self.cache.get(self.key, [])
        if self.now in history:
            history.remove(self.now)
            self.cache.set(self.key, history, self.duration)


class LoginAddressThrottle(LoginThrottle):
    """Per client address (REMOTE_ADDR, or X-Forwarded-For as far as REST_FRAMEWORK's NUM_PROXIES trusts it)."""

    scope = "login_address"

    def get_cache_key(self, request: Request, view: APIView) -> str:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


class LoginUsernameThrottle(LoginThrottle):
    """Per username, whatever address the guesses come from."""

    scope = "login_username"

    def get_cache_key(self, request: Request, view: APIView) -> str | None:
        username = request.data.get("username") if isinstance(request.data, dict) else None
        if not isinstance(username, str) or not username.strip():
            return None  # the serializer refuses it; the address throttle still counts it
        # Case-folded (one bucket for "Ana" and "ana") and hashed (any text makes a valid cache key).
        ident = hashlib.sha256(username.strip().casefold().encode()).hexdigest()
        return self.cache_format % {"scope": self.scope, "ident": ident}


class LoginApi(ApiView):
    """Exchange a username and password for a JWT access/refresh pair.

    Failed logins are throttled per username and per client address (LOGIN_THROTTLE_RATE,
    LOGIN_ADDRESS_THROTTLE_RATE): past the rate every login answers 429 with Retry-After.
    """

    authentication_classes = []
    permission_classes = [AllowAny]
    throttle_classes = [LoginAddressThrottle, LoginUsernameThrottle]

    def get_throttles(self) -> list[LoginThrottle]:
        # The same instances for the check and for `forget`, which needs the keys the check counted.
        if not hasattr(self, "_throttles"):
            self._throttles = super().get_throttles()
        return self._throttles

    @extend_schema(
        request=LoginInputSerializer,
        responses={
            200: LoginOutputSerializer,
            **error_responses(400, 401),
            429: OpenApiResponse(ErrorSerializer, description="Too many failed logins; see Retry-After."),
        },
        auth=[],
    )
    def post(self, request: Request) -> Response:
        LoginInputSerializer(data=request.data).is_valid(raise_exception=True)  # unknown keys, not strings
        serializer = TokenObtainPairSerializer(data=request.data)  # bad credentials raise AuthenticationFailed
        serializer.is_valid(raise_exception=True)
        for throttle in self.get_throttles():
            throttle.forget()
        return Response({**serializer.validated_data, "user": UserOutputSerializer(serializer.user).data})


class MeOutputSerializer(serializers.Serializer):
    success = serializers.BooleanField()
    user = UserOutputSerializer()


class MeApi(ApiView):
    """The access token's user: who they are, what they may do, and the organizations they see."""

    @extend_schema(responses={200: MeOutputSerializer, **error_responses(401)})
    def get(self, request: Request) -> Response:
        return Response({"success": True, "user": UserOutputSerializer(request.user).data})


class TokenRefreshInputSerializer(InputSerializer, TokenRefreshSerializer):
    """simplejwt's refresh with rotation, where a token of a deleted or inactive user is a 401 (simplejwt
    looks a deleted user up without a guard: a 500) and a refresh token is spent once, even by two
    refreshes at the same moment (the one that blacklists it first wins)."""

    def validate(self, attrs: dict) -> dict:
        refresh = self.token_class(attrs["refresh"])  # signature, expiry, blacklist: a TokenError, a 401
        user_id = refresh.payload.get(jwt_settings.USER_ID_CLAIM)
        user = get_user_model().objects.filter(**{jwt_settings.USER_ID_FIELD: user_id}).first()
        if user is None or not jwt_settings.USER_AUTHENTICATION_RULE(user):
            raise InvalidToken(self.error_messages["no_active_account"])
        access = str(refresh.access_token)
        _, spent_now = refresh.blacklist()
        if not spent_now:
            raise TokenError("Token is blacklisted")
        refresh.set_jti()
        refresh.set_exp()
        refresh.set_iat()
        refresh.outstand()
        return {"access": access, "refresh": str(refresh)}


class RefreshOutputSerializer(serializers.Serializer):
    access = serializers.CharField()
    refresh = serializers.CharField(help_text="The new refresh token: the one sent is spent.")


class TokenRefreshApi(StrictRequestMixin, TokenRefreshView):
    """Exchange a refresh token for a new access token and a new refresh token; the one sent is revoked."""

    serializer_class = TokenRefreshInputSerializer

    @extend_schema(responses={200: RefreshOutputSerializer, **error_responses(400, 401)}, auth=[])
    def post(self, request: Request, *args, **kwargs) -> Response:
        return super().post(request, *args, **kwargs)


class LogoutInputSerializer(InputSerializer):
    refresh = serializers.CharField()


class LogoutOutputSerializer(serializers.Serializer):
    success = serializers.BooleanField()
    message = serializers.CharField()


class LogoutApi(ApiView):
    """Revoke a refresh token: it can no longer be refreshed. An access token already issued lives out
    its short lifetime (JWT_ACCESS_MINUTES)."""

    authentication_classes = []
    permission_classes = [AllowAny]

    @extend_schema(
        request=LogoutInputSerializer,
        responses={200: LogoutOutputSerializer, **error_responses(400, 401)},
        auth=[],
    )
    def post(self, request: Request) -> Response:
        serializer = LogoutInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            RefreshToken(serializer.validated_data["refresh"]).blacklist()
        except TokenError as error:  # invalid, expired, or revoked already
            raise InvalidToken(error.args[0]) from error
        return Response({"success": True, "message": "Logged out: the refresh token is revoked."})
