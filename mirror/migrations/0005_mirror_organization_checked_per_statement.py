"""pfa_mirror's organization: a foreign key constraint checked once per statement, not per row.

PostgreSQL checks a foreign key one inserted row at a time, which was a fifth of its work in a
first load. These triggers keep the constraint's promise with one check per statement, over the
statement's new rows (a transition table):

- an inserted or updated row must name an existing organization; the check takes the same lock
  a foreign key check takes (FOR KEY SHARE), so the organization cannot be deleted before the
  writing transaction ends;
- deleting an organization deletes its rows, also those a sync committed while the delete
  waited for that lock (the ORM's cascade ran before them).
"""

import django.db.models.deletion
from django.db import migrations, models

CREATE_POSTGRESQL = """
CREATE FUNCTION pfa_mirror_check_organizations() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    wanted uuid[];
    locked integer;
BEGIN
    SELECT array_agg(DISTINCT organization_id) INTO wanted FROM new_rows;
    IF wanted IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT count(*) INTO locked
    FROM (SELECT 1 FROM organizations WHERE id = ANY (wanted) FOR KEY SHARE) AS existing;
    IF locked < cardinality(wanted) THEN
        RAISE EXCEPTION 'insert or update on table "pfa_mirror" names an organization that does not exist'
            USING ERRCODE = 'foreign_key_violation', TABLE = 'pfa_mirror', COLUMN = 'organization_id';
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER pfa_mirror_inserted_organizations AFTER INSERT ON pfa_mirror
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION pfa_mirror_check_organizations();
CREATE TRIGGER pfa_mirror_updated_organizations AFTER UPDATE ON pfa_mirror
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION pfa_mirror_check_organizations();

CREATE FUNCTION organizations_delete_pfa_mirror() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM pfa_mirror WHERE organization_id IN (SELECT id FROM old_rows);
    RETURN NULL;
END
$$;
CREATE TRIGGER organizations_delete_pfa_mirror AFTER DELETE ON organizations
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION organizations_delete_pfa_mirror();
"""

DROP_POSTGRESQL = """
DROP TRIGGER organizations_delete_pfa_mirror ON organizations;
DROP FUNCTION organizations_delete_pfa_mirror();
DROP TRIGGER pfa_mirror_updated_organizations ON pfa_mirror;
DROP TRIGGER pfa_mirror_inserted_organizations ON pfa_mirror;
DROP FUNCTION pfa_mirror_check_organizations();
"""


def create_triggers(apps, schema_editor):
    schema_editor.execute(CREATE_POSTGRESQL)


def drop_triggers(apps, schema_editor):
    schema_editor.execute(DROP_POSTGRESQL)


class Migration(migrations.Migration):
    dependencies = [
        ("mirror", "0004_api_configuration_page_size_5000"),
    ]

    operations = [
        migrations.RunPython(create_triggers, drop_triggers),
        migrations.AlterField(
            model_name="pfamirror",
            name="organization",
            field=models.ForeignKey(
                db_constraint=False,
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="pfa_records",
                to="mirror.organization",
            ),
        ),
    ]
