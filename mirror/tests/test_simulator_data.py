"""The simulator's generated data: deterministic, realistic rows in PEMS's formats (`mirror.simulator.data`)."""

from __future__ import annotations

import datetime as dt
import re

from mirror.simulator import ALIASES, PemsSimulator, parse_orgs
from mirror.tests.simulator_requests import REFERENCE_TIME, as_date


def test_same_seed_org_and_count_generate_identical_rows(sim):
    again = PemsSimulator(orgs={"RIO": 500}, seed=1, reference_time=REFERENCE_TIME)
    other_seed = PemsSimulator(orgs={"RIO": 500}, seed=2, reference_time=REFERENCE_TIME)
    assert again.rows("RIO") == sim.rows("RIO")  # HOU's presence does not change RIO
    assert other_seed.rows("RIO") != sim.rows("RIO")
    assert sim.rows("RIO")[0]["pfs_id"] == "PFA-0000001"
    assert [row["pfs_id"] for row in sim.rows("RIO")] == [f"PFA-{n:07d}" for n in range(1, 501)]


def test_generated_rows_are_realistic_and_in_pems_formats(sim):
    rows = sim.rows("RIO")
    reference = sim.reference_time.replace(tzinfo=None)
    assert all(set(row) == set(ALIASES) for row in rows)
    assert "pfs_udf_costcode" in ALIASES
    assert {row["pfs_f_source"] for row in rows} == {"Rental", "Purchase"}
    assert {row["pfs_f_dor"] for row in rows} == {"BEO", "PROJECT"}
    assert len({row["pfs_f_category"] for row in rows}) >= 8
    for row in rows:
        assert row["pfs_a_org"] == "RIO"
        assert 1 <= int(row["pfs_recordid"]) <= 20
        assert re.fullmatch(r"\d{2}/\d{2}/\d{4} \d{2}:\d{2}", row["pfs_lastmodified"])
        assert reference - dt.timedelta(days=366) <= as_date(row["pfs_lastmodified"]) < reference
        if row["pfs_f_source"] == "Rental":
            assert re.fullmatch(r"\d{1,3}(,\d{3})*\.\d{2}", row["pfs_f_rental"]) and row["pfs_f_purchase"] == ""
        else:
            assert re.fullmatch(r"\d{1,3}(,\d{3})*\.\d{2}", row["pfs_f_purchase"]) and row["pfs_f_rental"] == ""
        assert 2024 <= as_date(row["pfs_p_startdate"]).year <= 2027
        assert as_date(row["pfs_p_startdate"]) < as_date(row["pfs_p_enddate"])
        future = as_date(row["pfs_f_startdate"]) > reference
        assert (row["pfs_a_startdate"] == "") == future
        assert {row["pfs_f_actualized"], row["pfs_f_discontinued"], row["pfs_f_fundstrans"]} <= {"-1", "0"}
    assert any(int(row["pfs_f_rental"].replace(",", "").split(".")[0] or 0) >= 1000 for row in rows)


def test_parse_orgs():
    assert parse_orgs("RIO=50000, HOU=20000") == {"RIO": 50000, "HOU": 20000}
