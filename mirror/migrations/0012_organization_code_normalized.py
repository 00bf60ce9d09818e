"""Organization codes are stored upper case (`organization_code_normalize`): existing lowercase codes
are upper-cased, and the migration refuses, naming them, if two codes differ only by case."""

from django.db import migrations
from django.db.models import Count
from django.db.models.functions import Upper

import mirror.fields
import mirror.models


def organization_codes_upper_case(apps, schema_editor) -> None:
    """Upper-case every organization code; RuntimeError, before changing any, if two would collide."""
    organization = apps.get_model("mirror", "Organization")
    rows = organization.objects.using(schema_editor.connection.alias)
    colliding = (
        rows.annotate(normalized=Upper("code"))
        .values("normalized")
        .annotate(codes=Count("pk"))
        .filter(codes__gt=1)
        .values_list("normalized", flat=True)
    )
    if colliding:
        spelled = sorted(
            rows.annotate(normalized=Upper("code"))
            .filter(normalized__in=list(colliding))
            .values_list("code", flat=True)
        )
        raise RuntimeError(
            "Organization codes are now stored upper case, but these differ only by case: "
            f"{', '.join(spelled)}. Rename or delete all but one of each, then migrate again."
        )
    rows.exclude(code=Upper("code")).update(code=Upper("code"))


class Migration(migrations.Migration):
    dependencies = [
        ("mirror", "0011_write_back"),
    ]

    operations = [
        # First, on the old field: its lookups still take a code as written.
        migrations.RunPython(organization_codes_upper_case, migrations.RunPython.noop, elidable=True),
        migrations.AlterField(
            model_name="organization",
            name="code",
            field=mirror.fields.OrganizationCodeField(
                help_text="PEMS organization code, e.g. RIO: letters, digits, '_' and '-'; stored upper case.",
                max_length=32,
                unique=True,
                validators=[mirror.models.validate_organization_code],
            ),
        ),
    ]
