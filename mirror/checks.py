"""System checks: a PFASYNC_ENCRYPTION_KEY that cannot read the stored secrets stops start-up."""

from django.core.checks import Error, register
from django.db import DatabaseError


@register()
def check_secrets_decrypt(app_configs, **kwargs):
    """Decrypt every stored PEMS secret: one error per connection the configured keys cannot read."""
    from mirror.models import ApiConfiguration
    from mirror.secrets import SecretDecryptionError

    try:
        configurations = list(ApiConfiguration.objects.exclude(secret="").select_related("organization").order_by("pk"))
    except DatabaseError:
        return []  # not migrated yet: nothing stored to check
    errors = []
    for configuration in configurations:
        try:
            configuration.get_secret()
        except SecretDecryptionError as error:
            errors.append(Error(str(error), id="mirror.E001"))
    return errors
