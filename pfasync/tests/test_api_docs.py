"""docs/api.md against the code: the error codes it lists are the ones the API can answer, and the
limits it lists are the ones the input serializers and settings enforce."""

import re
from pathlib import Path

from django.conf import settings
from rest_framework import serializers

import pfasync.api_urls  # noqa: F401 (loads every API module, so every input serializer is defined)
from pfasync import api

ROOT = Path(__file__).resolve().parents[2]
API_MODULES = ["pfasync/api.py", "pfasync/auth.py", "pfasync/parsers.py", "mirror/api.py", "mirror/records_api.py",
               "synclog/api.py"]  # fmt: skip


def _section(title: str) -> str:
    text = (ROOT / "docs" / "api.md").read_text()
    start = text.index(f"{title}\n")
    end = text.find("\n#", start + len(title))
    return text[start : end if end > 0 else None]


def _table_rows(section: str) -> list[list[str]]:
    rows = [line.strip("|").split("|") for line in section.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in row] for row in rows[1:]]  # the header row left out


def codes_the_code_answers() -> set[str]:
    """Each code by status (ERROR_CODES), each code the handler names itself, each ApiError's code."""
    codes = set(api.ERROR_CODES.values())
    for module in API_MODULES:
        source = (ROOT / module).read_text()
        codes |= set(re.findall(r'\berror="([A-Z_]+)"', source))  # ApiError(error="...")
        codes |= set(re.findall(r'(?:return|else) "([A-Z_]+)"', source))  # _error_code's own
        codes |= set(re.findall(r'"error": "([A-Z_]+)"', source))  # answered directly (SERVER_ERROR)
    return codes


def test_docs_list_every_error_code_the_api_answers_and_no_other():
    documented = {row[0].strip("`") for row in _table_rows(_section("## Errors")) if row[0].startswith("`")}
    assert documented == codes_the_code_answers()


def _input_serializers() -> list[type[serializers.Serializer]]:
    found, pending = [], [api.InputSerializer]
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return found[1:]


def limits_the_code_enforces() -> set[tuple[str, int]]:
    """(field, bound) for every length and value bound of every input serializer's fields."""
    limits = set()
    for cls in _input_serializers():
        for name, field in cls().fields.items():
            for bound in ("max_length", "min_length", "max_value", "min_value"):
                if getattr(field, bound, None) is not None:
                    limits.add((name, int(getattr(field, bound))))
            child = getattr(field, "child", None)
            if child is not None and getattr(child, "max_length", None) is not None:
                limits.add((name, child.max_length))
    return limits


def test_docs_list_every_limit_the_api_enforces():
    documented = {}
    for cell, value in (row[:2] for row in _table_rows(_section("### Limits"))):
        named = re.match(r"`(\w+)`", cell)
        name = named.group(1) if named else cell.split()[0]
        documented.setdefault(name, set()).update(int(number) for number in re.findall(r"\d+", value))
    assert settings.API_MAX_BODY_BYTES in documented.pop("API_MAX_BODY_BYTES")
    enforced = limits_the_code_enforces()
    missing = {(name, bound) for name, bound in enforced if bound not in documented.get(name, set())}
    assert not missing, f"limits enforced but not in docs/api.md: {sorted(missing)}"
    enforced_names = {name for name, _ in enforced}
    unknown = set(documented) - enforced_names - {"edited"}  # edited values: the delta layer's, by column
    assert not unknown, f"limits in docs/api.md the input serializers do not enforce: {sorted(unknown)}"
