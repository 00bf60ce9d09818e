"""Organization codes (and a connection's PEMS organization code) hold only letters, digits, `_` and `-`."""

import mirror.models
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('mirror', '0007_watermark_per_organization_and_deletions'),
    ]

    operations = [
        migrations.AlterField(
            model_name='apiconfiguration',
            name='pems_organization_code',
            field=models.CharField(blank=True, help_text="Defaults to the organization's code. Not allowed on the global default connection.", max_length=32, validators=[mirror.models.validate_organization_code]),
        ),
        migrations.AlterField(
            model_name='organization',
            name='code',
            field=models.CharField(help_text="PEMS organization code, e.g. RIO: letters, digits, '_' and '-'.", max_length=32, unique=True, validators=[mirror.models.validate_organization_code]),
        ),
    ]
