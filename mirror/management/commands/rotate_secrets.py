"""`manage.py rotate_secrets`: re-encrypt every stored PEMS secret with the first encryption key."""

from django.core.management.base import BaseCommand, CommandError

from mirror.services import connection_secrets_rotate


class Command(BaseCommand):
    help = (
        "Re-encrypt every stored PEMS secret with the first PFASYNC_ENCRYPTION_KEY entry. Rotate keys by "
        "listing the new key first and the old one after it, running this, then dropping the old key. "
        "Secrets already encrypted with the first key are left alone: running it twice is safe."
    )

    def handle(self, *args, **options):
        rotation = connection_secrets_rotate()
        self.stdout.write(
            f"Re-encrypted {rotation.rotated} PEMS secret(s) with the first key; {rotation.current} already used it."
        )
        if rotation.undecryptable:
            raise CommandError(
                f"{len(rotation.undecryptable)} secret(s) cannot be decrypted with any PFASYNC_ENCRYPTION_KEY "
                f"entry and were left as they are: {', '.join(rotation.undecryptable)}. Add the key they were "
                "encrypted with, or enter those secrets again."
            )
