"""Worker clusters saying they are alive (`pfa_sync_worker`), and the command that ran a run."""

import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("synclog", "0004_write_back"),
    ]

    operations = [
        migrations.CreateModel(
            name="SyncWorker",
            fields=[
                (
                    "id",
                    models.UUIDField(editable=False, help_text="The cluster's id.", primary_key=True, serialize=False),
                ),
                ("host", models.CharField(max_length=255)),
                ("pid", models.PositiveIntegerField()),
                (
                    "workers",
                    models.PositiveSmallIntegerField(help_text="Its worker processes: how many tasks it runs at once."),
                ),
                ("started_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("seen_at", models.DateTimeField(db_index=True, default=django.utils.timezone.now)),
            ],
            options={
                "verbose_name": "worker cluster",
                "db_table": "pfa_sync_worker",
                "ordering": ["started_at"],
            },
        ),
        migrations.AddField(
            model_name="pfasynclog",
            name="command",
            field=models.CharField(
                blank=True,
                db_default="",
                default="",
                help_text="The management command that ran it (`sync_pems`, `push_pems`); empty for other triggers.",
                max_length=32,
            ),
        ),
    ]
