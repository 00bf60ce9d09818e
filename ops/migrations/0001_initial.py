"""The ops tables: the worker's heartbeat, cached mirror sizes, PEMS call counts, run totals and alert states."""

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ('mirror', '0008_organization_code_validated'),
    ]

    operations = [
        migrations.CreateModel(
            name='MirrorCount',
            fields=[
                ('organization', models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, primary_key=True, related_name='mirror_count', serialize=False, to='mirror.organization')),
                ('live_rows', models.PositiveBigIntegerField()),
                ('deleted_rows', models.PositiveBigIntegerField(help_text='Rows marked deleted, not purged yet.')),
                ('counted_at', models.DateTimeField()),
            ],
            options={
                'db_table': 'ops_mirror_count',
            },
        ),
        migrations.CreateModel(
            name='PemsCallStat',
            fields=[
                ('id', models.BigAutoField(primary_key=True, serialize=False)),
                ('outcome', models.CharField(max_length=16)),
                ('le', models.FloatField(blank=True, null=True)),
                ('calls', models.PositiveBigIntegerField()),
                ('seconds', models.FloatField(help_text="The calls' latencies added up.")),
                ('created_at', models.DateTimeField(default=django.utils.timezone.now)),
            ],
            options={
                'verbose_name': 'PEMS call count',
                'db_table': 'ops_pems_call_stat',
            },
        ),
        migrations.CreateModel(
            name='RunTotals',
            fields=[
                ('direction', models.CharField(max_length=8, primary_key=True, serialize=False)),
                ('through', models.DateTimeField()),
                ('totals', models.JSONField(help_text='Row counts, runs per status and the duration histogram.')),
            ],
            options={
                'verbose_name_plural': 'run totals',
                'db_table': 'ops_run_totals',
            },
        ),
        migrations.CreateModel(
            name='WorkerHeartbeat',
            fields=[
                ('id', models.PositiveSmallIntegerField(default=1, editable=False, primary_key=True, serialize=False)),
                ('seen_at', models.DateTimeField(help_text='A worker process started or the sync tick ran.')),
                ('last_tick_at', models.DateTimeField(blank=True, help_text='The sync tick last ran.', null=True)),
            ],
            options={
                'db_table': 'ops_worker_heartbeat',
            },
        ),
        migrations.CreateModel(
            name='AlertState',
            fields=[
                ('id', models.BigAutoField(primary_key=True, serialize=False)),
                ('kind', models.CharField(choices=[('stale', 'Data is stale'), ('failing', 'Runs keep failing')], max_length=16)),
                ('active', models.BooleanField(default=False)),
                ('changed_at', models.DateTimeField(default=django.utils.timezone.now)),
                ('organization', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='alert_states', to='mirror.organization')),
            ],
            options={
                'db_table': 'ops_alert_state',
                'constraints': [models.UniqueConstraint(fields=('organization', 'kind'), name='ops_alert_state_one_per_kind')],
            },
        ),
    ]
