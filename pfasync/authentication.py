"""The API's bearer-token authentication (REST_FRAMEWORK["DEFAULT_AUTHENTICATION_CLASSES"]).

A module of its own: DRF imports it while `rest_framework.views` loads, so it must not import that
module (as `pfasync.auth` and `pfasync.api` do).
"""

from django.utils.translation import gettext_lazy as _
from rest_framework_simplejwt.authentication import JWTAuthentication as SimpleJWTAuthentication
from rest_framework_simplejwt.exceptions import ExpiredTokenError, InvalidToken, TokenError
from rest_framework_simplejwt.settings import api_settings as jwt_settings
from rest_framework_simplejwt.tokens import Token


class JWTAuthentication(SimpleJWTAuthentication):
    """simplejwt's bearer-token authentication, where an expired access token is told from a forged
    or malformed one: simplejwt refuses both alike, with "Given token not valid for any token type"."""

    def get_validated_token(self, raw_token: bytes) -> Token:
        expired = None
        for token_class in jwt_settings.AUTH_TOKEN_CLASSES:
            try:
                return token_class(raw_token)
            except ExpiredTokenError as error:
                expired = error
            except TokenError:
                continue
        # The cause tells the error handler (`pfasync.api`) to answer TOKEN_EXPIRED rather than TOKEN_INVALID.
        raise InvalidToken(_("Given token not valid for any token type")) from expired
