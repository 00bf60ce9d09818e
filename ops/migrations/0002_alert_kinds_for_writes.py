"""Alerts for edits and writes: conflicts waiting for a planner, failing writes to PEMS."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('ops', '0001_initial'),
    ]

    operations = [
        migrations.AlterField(
            model_name='alertstate',
            name='kind',
            field=models.CharField(choices=[('stale', 'Data is stale'), ('failing', 'Runs keep failing'), ('writes_failing', 'Writes to PEMS fail'), ('conflicts', 'Edits in conflict wait for a planner')], max_length=16),
        ),
    ]
