"""The PFA columns are declared once, on the model: the view SQL, the save rules and the editable
fields agree with that declaration."""

import importlib

from mirror import save_rules, views_sql
from mirror.models import EDITABLE_FIELDS, PFA_ALIASES, PFA_COLUMNS, PfaMirror, PfaOverlay

_BY_ALIAS = {field.pems_alias: field for field in PFA_COLUMNS}


def test_the_merged_view_sql_derived_from_the_model_is_the_one_the_migration_created():
    # A model change that alters it needs a migration recreating pfa_merged_live with the new text.
    migration = importlib.import_module("mirror.migrations.0009_delta_layer")
    assert views_sql.MERGED_LIVE == migration.MERGED_LIVE


def test_every_column_of_the_merged_view_is_a_column_of_the_mirror_and_the_overlay():
    overlay_columns = {field.column for field in PfaOverlay._meta.concrete_fields}
    for field in PfaMirror._meta.concrete_fields:
        if field.name != "id":
            assert field.column in overlay_columns


def test_the_save_rules_name_pfa_columns_of_the_kinds_they_check():
    assert set(_BY_ALIAS) == set(PFA_ALIASES.values())
    for alias in save_rules.CODE_ALIASES:
        assert _BY_ALIAS[alias].get_internal_type() == "TextField"
    for alias in save_rules.NON_NEGATIVE_ALIASES:
        assert _BY_ALIAS[alias].get_internal_type() == "DecimalField"
        assert _BY_ALIAS[alias].name in EDITABLE_FIELDS
    for start, end, _ in save_rules.DATE_PAIRS:
        for alias in (start, end):
            assert _BY_ALIAS[alias].get_internal_type() == "DateField"
            assert _BY_ALIAS[alias].name in EDITABLE_FIELDS
    # PEMS keeps fewer places than the mirror: every value PEMS keeps fits the mirror's column.
    decimals = [field for field in PFA_COLUMNS if field.get_internal_type() == "DecimalField"]
    assert decimals and all(field.decimal_places >= save_rules.DECIMAL_PLACES for field in decimals)


def test_keys_and_pems_bookkeeping_are_not_editable():
    assert not {"pfa_id", "pems_record_id", "pems_last_modified"} & set(EDITABLE_FIELDS)
    assert set(EDITABLE_FIELDS) < set(PFA_ALIASES)
