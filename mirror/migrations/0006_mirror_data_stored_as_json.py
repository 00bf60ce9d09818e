"""pfa_mirror.data: PostgreSQL `json` (the text as written) instead of `jsonb`.

`jsonb` parsed every row's JSON into its binary form and sorted its keys, about a fifth of
PostgreSQL's work in a first load; nothing here uses the operators only `jsonb` has.
On a filled mirror this rewrites the table once, under an exclusive lock (350,000 rows took 7 s
here). The rows keep their content; rows a sync writes from then on hold the exact canonical JSON
their `content_hash` digests.
"""

from django.db import migrations

import mirror.fields


class Migration(migrations.Migration):
    dependencies = [
        ("mirror", "0005_mirror_organization_checked_per_statement"),
    ]

    operations = [
        migrations.AlterField(
            model_name="pfamirror",
            name="data",
            field=mirror.fields.JSONTextField(help_text="The whole PEMS row, unknown tenant columns included."),
        ),
    ]
