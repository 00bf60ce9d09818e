"""The list index ends with its tie-break, pfa_id, so a page of the records list is read in order from it;
the overlay keeps, per merged row, what differs from PEMS and who changed it."""

from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('mirror', '0009_delta_layer'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name='pfamirror',
            name='pfa_mirror_org_cat_fcst',
        ),
        migrations.RemoveIndex(
            model_name='pfaoverlay',
            name='pfa_overlay_org_cat_fcst',
        ),
        migrations.RemoveField(
            model_name='pfaoverlay',
            name='changed_fields',
        ),
        migrations.AddField(
            model_name='pfaoverlay',
            name='changes',
            field=models.JSONField(default=dict, help_text='Each field that differs from PEMS: {"pems", "value", "state", "by"} of the edit that set it.'),
        ),
        migrations.AddIndex(
            model_name='pfamirror',
            index=models.Index(fields=['organization', 'category', '-forecast_start_date', 'pfa_id'], name='pfa_mirror_org_cat_fcst'),
        ),
        migrations.AddIndex(
            model_name='pfaoverlay',
            index=models.Index(fields=['organization', 'category', '-forecast_start_date', 'pfa_id'], name='pfa_overlay_org_cat_fcst'),
        ),
]
