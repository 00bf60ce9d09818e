"""System checks: a PFASYNC_ENCRYPTION_KEY that cannot read the stored secrets stops start-up."""

from django.core.checks import Error, register
from django.db import DatabaseError


@register()
def check_secrets_decrypt(app_configs, **kwargs):
    from mirror.models import ApiConfiguration
    from mirror.secrets import SecretDecryptionError

    try:
        configuration = ApiConfiguration.objects.exclude(secret="").order_by("updated_at").last()
    except DatabaseError:
        return []  # not migrated yet: nothing stored to check
    if configuration is None:
        return []
    try:
        configuration.get_secret()
    except SecretDecryptionError as error:
        return [Error(str(error), id="mirror.E001")]
    return []
