"""The simulator's rows and the changes made to them (`mirror.simulator.store`)."""

from __future__ import annotations

import pytest

from mirror.simulator import ALIASES, PemsSimulator
from mirror.tests.simulator_requests import REFERENCE_TIME, as_date, as_number


def test_corrupt_rows_are_deterministic_and_malformed(sim):
    twin = PemsSimulator(orgs={"RIO": 500}, seed=1, reference_time=REFERENCE_TIME)
    ids = sim.corrupt_rows("RIO", 8)
    assert ids == twin.corrupt_rows("RIO", 8)
    assert len(set(ids)) == 8
    by_id = {row["pfs_id"]: row for row in sim.rows("RIO")}
    kinds = ["bad_date", "bad_decimal", "missing_id", "bad_flag"] * 2
    for pfa_id, kind in zip(ids, kinds):
        if kind == "missing_id":
            assert pfa_id not in by_id and sim.get_row("RIO", pfa_id) is None
            continue
        row = by_id[pfa_id]
        if kind == "bad_date":
            with pytest.raises(ValueError):
                as_date(row["pfs_f_startdate"])
        elif kind == "bad_decimal":
            with pytest.raises(ValueError):
                as_number(row["pfs_f_rental"] or row["pfs_f_purchase"])
        else:
            assert row["pfs_f_actualized"] not in ("-1", "0")
    assert sum(1 for row in sim.rows("RIO") if row["pfs_id"] == "") == 2
    assert len(sim.rows("RIO")) == 500


def test_row_mutations_follow_pems_save_rules(sim):
    inserted = sim.insert_row("RIO", {"pfs_id": "PFA-0000000", "pfs_f_model": "X1"})
    assert inserted["pfs_recordid"] == "1" and inserted["pfs_a_org"] == "RIO" and inserted["pfs_f_area"] == ""
    assert sim.rows("RIO")[0]["pfs_id"] == "PFA-0000000"
    before = sim.get_row("RIO", "PFA-0000005")
    updated = sim.update_row("RIO", "PFA-0000005", {"pfs_f_model": "X2"})
    assert int(updated["pfs_recordid"]) == int(before["pfs_recordid"]) + 1
    assert updated["pfs_lastmodified"] == sim.now() or as_date(updated["pfs_lastmodified"]) > as_date(
        before["pfs_lastmodified"]
    )
    sim.delete_row("RIO", "PFA-0000005")
    assert sim.get_row("RIO", "PFA-0000005") is None
    with pytest.raises(KeyError):
        sim.delete_row("RIO", "PFA-0000005")
    with pytest.raises(ValueError):
        sim.insert_row("RIO", {"pfs_id": "\x00PFA-1"})  # the storage keys of rows without an id


def test_move_row_saves_the_row_into_another_organization(sim):
    before = sim.get_row("RIO", "PFA-0000300")  # HOU's generated keys end at PFA-0000200
    moved = sim.move_row("RIO", "PFA-0000300", "HOU")
    assert sim.get_row("RIO", "PFA-0000300") is None
    assert sim.get_row("HOU", "PFA-0000300") == moved
    assert moved["pfs_a_org"] == "HOU" and int(moved["pfs_recordid"]) == int(before["pfs_recordid"]) + 1
    assert moved["pfs_lastmodified"][:10] == sim.now()[:10]
    unchanged = set(ALIASES) - {"pfs_a_org", "pfs_recordid", "pfs_lastmodified"}
    assert {alias: moved[alias] for alias in unchanged} == {alias: before[alias] for alias in unchanged}
    assert sim.organizations == {"RIO": 499, "HOU": 201}
    with pytest.raises(KeyError):
        sim.move_row("RIO", "PFA-0000300", "HOU")
    with pytest.raises(ValueError):
        sim.move_row("RIO", "PFA-0000007", "HOU")  # HOU has its own PFA-0000007
    with pytest.raises(KeyError):
        sim.move_row("RIO", "PFA-0000008", "NOPE")
    assert sim.get_row("RIO", "PFA-0000007") is not None and sim.get_row("RIO", "PFA-0000008") is not None


def test_touch_saves_a_deterministic_fraction_like_pems(sim):
    twin = PemsSimulator(orgs={"RIO": 500}, seed=1, reference_time=REFERENCE_TIME)
    before = {row["pfs_id"]: row for row in sim.rows("RIO")}
    touched = sim.touch_rows("RIO", 0.02, seed=7)
    assert touched == twin.touch_rows("RIO", 0.02, seed=7)
    assert len(touched) == 10
    now = sim.now()
    for pfa_id in touched:
        old, new = before[pfa_id], sim.get_row("RIO", pfa_id)
        assert int(new["pfs_recordid"]) == int(old["pfs_recordid"]) + 1
        assert new["pfs_lastmodified"][:10] == now[:10]
        unchanged = set(ALIASES) - {"pfs_recordid", "pfs_lastmodified"}
        assert {alias: new[alias] for alias in unchanged} == {alias: old[alias] for alias in unchanged}
    assert len(sim.rows("RIO")) == 500
    assert sim.touch_rows("RIO", 0.02, seed=8) != touched
