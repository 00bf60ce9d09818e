"""The mirror app: organizations, PEMS connections, mirrored PFA records and the PEMS client."""

from django.apps import AppConfig


class MirrorConfig(AppConfig):
    name = "mirror"
    verbose_name = "PEMS mirror"

    def ready(self) -> None:
        from mirror import checks, secrets  # noqa: F401  (registers the system checks)

        # Fail at start-up, not in the middle of a sync, when the key is missing or malformed.
        secrets.get_cipher()
