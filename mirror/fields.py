"""Model fields of our own."""

from django.db import models


def organization_code_normalize(code: str) -> str:
    """An organization code as stored and matched: without surrounding blanks, upper case (PEMS's own
    spelling, e.g. RIO). Every lookup by code goes through this, so `rio` and `RIO` name one organization."""
    return code.strip().upper()


class OrganizationCodeField(models.CharField):
    """An organization code, normalized (`organization_code_normalize`) wherever a value comes in: when
    the model is cleaned (the admin, the API), when it is saved, and in every query's lookup value."""

    def to_python(self, value):
        value = super().to_python(value)
        return organization_code_normalize(value) if isinstance(value, str) else value

    def get_prep_value(self, value):
        value = super().get_prep_value(value)
        return organization_code_normalize(value) if isinstance(value, str) else value

    def pre_save(self, model_instance, add):
        # Saved as normalized, and the instance says what the row holds.
        value = self.to_python(super().pre_save(model_instance, add))
        setattr(model_instance, self.attname, value)
        return value


class JSONTextField(models.JSONField):
    """A JSONField that PostgreSQL stores as `json`, the JSON text as written, instead of `jsonb`.

    For a column that is written whole and read back whole. `jsonb` parses every value into its
    binary form on the way in, sorting each object's keys: about a fifth of PostgreSQL's work in a
    mirror's first load, spent for operators (`@>`, `?`, jsonpath) that `json` lacks. `->` and
    `->>` work on both, and `data::jsonb` gives the others when someone needs them.
    """

    def db_type(self, connection) -> str:
        return "json"

    def from_db_value(self, value, expression, connection):
        # psycopg decodes `json` itself (Django has it hand over `jsonb` as text instead).
        if value is None or isinstance(value, str | bytes):
            return super().from_db_value(value, expression, connection)
        return value
