"""PEMS's save rules (`mirror.save_rules`): the form PEMS keeps a value in, and why it refuses a save."""

from datetime import date
from decimal import Decimal

import pytest

from mirror.save_rules import places_problem, save_problems, value_kept


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        (Decimal("5200.125"), Decimal("5200.13")),  # half up, not to even
        (Decimal("5200.135"), Decimal("5200.14")),
        (Decimal("-0.005"), Decimal("-0.01")),
        (Decimal("12345678901234.5"), Decimal("12345678901234.50")),
        ("  CRANES \t", "CRANES"),
        ("   ", ""),
        (None, None),
        (date(2027, 1, 1), date(2027, 1, 1)),
    ],
)
def test_a_value_is_kept_as_pems_keeps_it(sent, kept):
    assert value_kept(sent) == kept


def test_values_pems_holds_alike_compare_equal():
    assert value_kept(Decimal("5200.1")) == value_kept(Decimal("5200.10")) == value_kept(Decimal("5200.104"))
    assert value_kept(" A ") == value_kept("A")


def test_more_places_than_pems_keeps_are_named_with_what_it_would_save():
    assert places_problem(Decimal("5200.10")) is None
    assert "5200.13" in places_problem(Decimal("5200.125"))


def test_a_negative_rate_or_price_is_refused_and_zero_is_not():
    changed = {"pfs_f_rental": Decimal("-1"), "pfs_f_purchase": Decimal("-0.01")}
    assert set(save_problems(changed, changed)) == {"pfs_f_rental", "pfs_f_purchase"}
    assert save_problems({"pfs_f_rental": Decimal("0"), "pfs_f_purchase": Decimal("0.00")}, {}) == {}


def test_text_longer_than_its_column_is_refused_codes_being_shorter():
    assert save_problems({"pfs_f_category": "C" * 30, "pfs_f_model": "M" * 80}, {}) == {}
    problems = save_problems({"pfs_f_category": "C" * 31, "pfs_f_model": "M" * 81}, {})
    assert set(problems) == {"pfs_f_category", "pfs_f_model"}
    assert "30" in problems["pfs_f_category"] and "80" in problems["pfs_f_model"]


def test_an_end_before_its_start_is_refused_on_the_date_the_save_sets():
    saved = {"pfs_f_startdate": date(2027, 3, 1), "pfs_f_enddate": date(2027, 1, 1)}
    assert set(save_problems({"pfs_f_enddate": date(2027, 1, 1)}, saved)) == {"pfs_f_enddate"}
    assert set(save_problems({"pfs_f_startdate": date(2027, 3, 1)}, saved)) == {"pfs_f_startdate"}
    # A save that sets neither date of the pair is not refused for what is already held.
    assert save_problems({"pfs_f_model": "M"}, {**saved, "pfs_f_model": "M"}) == {}
    # A missing date is no problem; the same day is not before.
    assert save_problems({"pfs_f_enddate": None}, {"pfs_f_startdate": date(2027, 3, 1), "pfs_f_enddate": None}) == {}
    same_day = {"pfs_p_startdate": date(2027, 3, 1), "pfs_p_enddate": date(2027, 3, 1)}
    assert save_problems(same_day, same_day) == {}
