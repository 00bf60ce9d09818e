"""Model fields of our own."""

from django.db import models


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
