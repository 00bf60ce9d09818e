"""The simulated tenant's data: the PFA grid's columns and a generator of realistic rows.

The columns are section 2 of the contract (docs/pems-api.md), in grid order. Rows are tuples of
strings in that order, exactly as the grid serves them (``MM/DD/YYYY`` dates, ``5,500.00``
decimals, ``-1``/``0`` check boxes), generated identically for the same seed, organization and
count. A RawJsonValue is a cell whose JSON is bytes no encoder would write, as poisoned rows carry.
"""

from __future__ import annotations

import datetime as dt
import random

GRID_NAME = "CUPFAG"
GRID_ID = "100541"
# Section 2 of the contract, in grid order, plus one tenant-specific column
# that a client must keep although it does not know it.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("pfs_id", "VARCHAR"),
    ("pfs_a_org", "VARCHAR"),
    ("pfs_recordid", "NUMBER"),
    ("pfs_lastmodified", "DATETIME"),
    ("pfs_f_area", "VARCHAR"),
    ("pfs_f_category", "VARCHAR"),
    ("pfs_f_catdesc", "VARCHAR"),
    ("pfs_f_class", "VARCHAR"),
    ("pfs_f_source", "VARCHAR"),
    ("pfs_f_dor", "VARCHAR"),
    ("pfs_f_rental", "DECIMAL"),
    ("pfs_f_purchase", "DECIMAL"),
    ("pfs_f_manufacturer", "VARCHAR"),
    ("pfs_f_model", "VARCHAR"),
    ("pfs_p_projcode", "VARCHAR"),
    ("pfs_equipment_tag", "VARCHAR"),
    ("pfs_p_startdate", "DATE"),
    ("pfs_p_enddate", "DATE"),
    ("pfs_f_startdate", "DATE"),
    ("pfs_f_enddate", "DATE"),
    ("pfs_a_startdate", "DATE"),
    ("pfs_a_enddate", "DATE"),
    ("pfs_f_actualized", "CHKBOOLEAN"),
    ("pfs_f_discontinued", "CHKBOOLEAN"),
    ("pfs_f_fundstrans", "CHKBOOLEAN"),
    ("pfs_udf_costcode", "VARCHAR"),
)
ALIASES: tuple[str, ...] = tuple(name for name, _ in COLUMNS)
COLUMN_TYPES: dict[str, str] = dict(COLUMNS)
INDEX: dict[str, int] = {name: i for i, name in enumerate(ALIASES)}
ID, ORG, RECORDID, LASTMOD = (INDEX[a] for a in ("pfs_id", "pfs_a_org", "pfs_recordid", "pfs_lastmodified"))
# Saved by the server on every write; a client may not set them through PATCH.
READ_ONLY_ALIASES = frozenset({"pfs_id", "pfs_a_org", "pfs_recordid", "pfs_lastmodified"})


# (code, description, classes, (manufacturer, model) pairs, monthly rate, purchase price)
CATEGORIES: tuple[tuple[str, str, tuple[str, ...], tuple[tuple[str, str], ...], int, int], ...] = (
    (
        "CRANE",
        "Mobile Crane",
        ("CR-RT", "CR-AT", "CR-CRAWLER"),
        (("Liebherr", "LTM 1100-5.2"), ("Grove", "GMK5150L"), ("Grove", "RT880E"), ("Manitowoc", "MLC300")),
        42000,
        1450000,
    ),
    (
        "GEN",
        "Generator",
        ("GEN-25KVA", "GEN-100KVA", "GEN-250KVA"),
        (("Caterpillar", "XQ230"), ("Cummins", "C150D6"), ("Atlas Copco", "QAS 60")),
        3800,
        95000,
    ),
    (
        "EXC",
        "Hydraulic Excavator",
        ("EXC-20T", "EXC-35T", "EXC-MINI"),
        (("Caterpillar", "320"), ("Komatsu", "PC210LC-11"), ("Hitachi", "ZX350LC-6")),
        9500,
        410000,
    ),
    (
        "LTWR",
        "Light Tower",
        ("LT-DIESEL", "LT-SOLAR"),
        (("Generac", "MLT6SMD"), ("Atlas Copco", "HiLight V5+"), ("Wacker Neuson", "LTN6L")),
        900,
        18000,
    ),
    (
        "FORK",
        "Forklift / Telehandler",
        ("TH-10K", "TH-6K", "FL-5K"),
        (("JLG", "G10-55A"), ("Genie", "GTH-1056"), ("Caterpillar", "TH255C")),
        5200,
        160000,
    ),
    (
        "MEWP",
        "Aerial Work Platform",
        ("BOOM-60", "BOOM-80", "SCISSOR-19"),
        (("JLG", "600S"), ("Genie", "S-65"), ("Skyjack", "SJ3219")),
        2900,
        115000,
    ),
    (
        "COMP",
        "Air Compressor",
        ("AC-185CFM", "AC-375CFM"),
        (("Atlas Copco", "XAS 185"), ("Sullair", "185DPQ"), ("Doosan", "P185WDO")),
        1300,
        32000,
    ),
    (
        "WELD",
        "Welding Machine",
        ("WM-ENGINE", "WM-INVERTER"),
        (("Lincoln Electric", "Vantage 500"), ("Miller", "Big Blue 400")),
        1100,
        24000,
    ),
    (
        "TRUCK",
        "Pickup Truck",
        ("PU-HALF", "PU-3QTR"),
        (("Ford", "F-150"), ("Chevrolet", "Silverado 1500"), ("Ram", "1500")),
        1800,
        52000,
    ),
    ("DOZER", "Crawler Dozer", ("DZ-D6", "DZ-D8"), (("Caterpillar", "D6"), ("Komatsu", "D61PXi-24")), 14500, 520000),
    ("LOADER", "Wheel Loader", ("WL-MED", "WL-LRG"), (("Caterpillar", "950M"), ("Volvo", "L120H")), 11000, 380000),
    ("PUMP", "Dewatering Pump", ("PMP-4IN", "PMP-6IN"), (("Godwin", "CD150M"), ("Pioneer", "PP64C12")), 2400, 41000),
    (
        "TRLR",
        "Office Trailer",
        ("TR-12X60", "TR-24X60"),
        (("Williams Scotsman", "12x60 Office"), ("Mobile Modular", "24x60 Double")),
        1500,
        88000,
    ),
)
AREAS = (
    "AREA-100 PROCESS",
    "AREA-200 UTILITIES",
    "AREA-300 TANK FARM",
    "AREA-400 MARINE",
    "AREA-500 PIPERACK",
    "SILO-CIVIL",
    "SILO-MECHANICAL",
    "SILO-E&I",
    "LAYDOWN-1",
    "CAMP",
)
COST_CODES = tuple(f"CC-{code}" for code in range(4100, 4900, 25))
RECORDID_STRINGS = tuple(str(n) for n in range(0, 21))

_DATE_ORIGIN = dt.date(2023, 1, 1)
_DATE_STRINGS = tuple((_DATE_ORIGIN + dt.timedelta(days=n)).strftime("%m/%d/%Y") for n in range(365 * 7))
_PLAN_START_FIRST = (dt.date(2024, 1, 1) - _DATE_ORIGIN).days
_PLAN_START_SPAN = (dt.date(2027, 6, 30) - dt.date(2024, 1, 1)).days


def format_decimal(value: float) -> str:
    """Format a decimal the way the grid shows it: ``5,500.00``."""
    return f"{value:,.2f}"


def format_datetime(moment: dt.datetime) -> str:
    """Format a tenant-local datetime as ``MM/DD/YYYY HH:mm``."""
    return moment.strftime("%m/%d/%Y %H:%M")


def generate_rows(org: str, count: int, *, seed: int, reference: dt.datetime, start: int = 1) -> list[tuple[str, ...]]:
    """Generate ``count`` PFA rows for ``org``, identical for the same seed, org and count."""
    rng = random.Random(f"{seed}:{org}")
    rand = rng.random
    projects = tuple(f"{org}-PRJ-{100 + n * 7}" for n in range(12))
    today = (reference.date() - _DATE_ORIGIN).days
    reference_naive = reference.replace(tzinfo=None, second=0, microsecond=0)
    minutes_per_year = 365 * 24 * 60
    rates: dict[int, str] = {}
    dates = _DATE_STRINGS
    rows = []
    for number in range(start, start + count):
        code, description, classes, models, rate, price = CATEGORIES[int(rand() * len(CATEGORIES))]
        manufacturer, model = models[int(rand() * len(models))]
        rental = rand() < 0.75
        # Round to 25 so that equal amounts share one string object.
        amount = int((rate if rental else price) * (0.6 + rand() * 0.8) / 25) * 25
        money = rates.get(amount)
        if money is None:
            money = rates[amount] = format_decimal(amount)
        plan_start = _PLAN_START_FIRST + int(rand() * _PLAN_START_SPAN)
        plan_end = plan_start + 30 + int(rand() * 700)
        shift = 0 if rand() < 0.5 else int(rand() * 120) - 30
        forecast_start = plan_start + shift
        forecast_end = plan_end + shift + (int(rand() * 60) if rand() < 0.3 else 0)
        started = forecast_start <= today
        ended = forecast_end <= today
        discontinued = rand() < 0.04
        modified = reference_naive - dt.timedelta(minutes=1 + int(rand() * minutes_per_year))
        rows.append(
            (
                f"PFA-{number:07d}",
                org,
                RECORDID_STRINGS[1 + int(rand() * 20)],
                format_datetime(modified),
                AREAS[int(rand() * len(AREAS))],
                code,
                description,
                classes[int(rand() * len(classes))],
                "Rental" if rental else "Purchase",
                "BEO" if rand() < 0.3 else "PROJECT",
                money if rental else "",
                "" if rental else money,
                manufacturer,
                model,
                projects[int(rand() * len(projects))],
                f"{code}-{10000 + int(rand() * 89999)}" if started else "",
                dates[plan_start],
                dates[plan_end],
                dates[forecast_start],
                dates[forecast_end],
                dates[forecast_start] if started else "",
                dates[forecast_end] if ended else "",
                "-1" if ended else "0",
                "-1" if discontinued else "0",
                "-1" if rand() < 0.1 else "0",
                COST_CODES[int(rand() * len(COST_CODES))],
            )
        )
    return rows


def parse_orgs(text: str) -> dict[str, int]:
    """Parse ``RIO=50000,HOU=20000`` into ``{"RIO": 50000, "HOU": 20000}``; ValueError names the bad part."""
    orgs: dict[str, int] = {}
    for part in text.split(","):
        org, sep, count = part.strip().partition("=")
        org = org.strip()
        try:
            number = int(count.strip())
        except ValueError:
            number = -1
        if not sep or not org or number < 0:
            raise ValueError(f"bad organization spec {part.strip()!r}: expected ORG=COUNT, e.g. RIO=50000")
        orgs[org] = number
    return orgs


class RawJsonValue(str):
    """A cell value served as the exact bytes ``raw`` inside its JSON string, even bytes no JSON
    encoder would write (a lone surrogate escape, invalid UTF-8). As a str it is the readable text
    a lenient client would decode, with U+FFFD for what cannot be decoded."""

    raw: bytes

    def __new__(cls, readable: str, raw: bytes) -> RawJsonValue:
        value = super().__new__(cls, readable)
        value.raw = raw
        return value
