"""Write runs: their counts (written, rebased, conflicts) and one active write run per organization."""

from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("mirror", "0011_write_back"),
        ("synclog", "0003_sync_log_claim_token_and_cancel"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="pfasynclog",
            name="records_conflicts",
            field=models.PositiveBigIntegerField(db_default=0, default=0),
        ),
        migrations.AddField(
            model_name="pfasynclog",
            name="records_rebased",
            field=models.PositiveBigIntegerField(
                db_default=0, default=0, help_text="Written after a three-way merge with a change PEMS took meanwhile."
            ),
        ),
        migrations.AddField(
            model_name="pfasynclog",
            name="records_written",
            field=models.PositiveBigIntegerField(db_default=0, default=0),
        ),
        migrations.AddConstraint(
            model_name="pfasynclog",
            constraint=models.UniqueConstraint(
                condition=models.Q(("direction", "write"), ("status__in", ["queued", "running"])),
                fields=("organization",),
                name="pfa_sync_log_one_active_write_per_org",
            ),
        ),
    ]
