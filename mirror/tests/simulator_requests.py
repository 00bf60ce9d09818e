"""Speaking to the PEMS simulator with raw HTTP the way a tenant would be: the requests and the
readers of their answers that the simulator's tests share (their fixtures are in conftest.py)."""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

import requests

from mirror.simulator import DEFAULT_PASSWORD, DEFAULT_TENANT, DEFAULT_USERNAME

GRIDS = "/axis/restservices/grids"
GRIDDATA = "/axis/restservices/griddata"
# Pinned so that the filter cases below select the same rows whatever day the tests run.
REFERENCE_TIME = dt.datetime(2026, 11, 1, tzinfo=ZoneInfo("America/Chicago"))


def basic(user: str = DEFAULT_USERNAME, password: str = DEFAULT_PASSWORD) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def headers(org: str = "RIO", **extra: str) -> dict[str, str]:
    values = {
        "tenant": DEFAULT_TENANT,
        "organization": org,
        "Authorization": basic(),
        "Content-Type": "application/json",
        "Accept": "application/json",
    }
    values.update(extra)
    return values


def body(
    rows: int | str = 10000, cursor: int | str = 1, request_type: str = "LIST.DATA_ONLY.STORED", **extra: Any
) -> dict[str, Any]:
    return {
        "GRID": {
            "GRID_NAME": "CUPFAG",
            "GRID_ID": "100541",
            "NUMBER_OF_ROWS_FIRST_RETURNED": rows,
            "CURSOR_POSITION": cursor,
        },
        "GRID_TYPE": {"TYPE": "LIST"},
        "REQUEST_TYPE": request_type,
        **extra,
    }


def post(http, server, payload, path=GRIDS, **header_values) -> requests.Response:
    hdrs = header_values.pop("hdrs", None) or headers(**header_values)
    return http.post(server.url + path, json=payload, headers=hdrs, timeout=10)


def shape_a_rows(response: requests.Response) -> list[dict[str, str]]:
    records = response.json()["Result"]["ResultData"]["DATARECORD"] or []
    return [{f["FIELDNAME"]: f["FIELDVALUE"] for f in record["DATAFIELD"]} for record in records]


def shape_b_rows(response: requests.Response) -> list[dict[str, str]]:
    rows = response.json()["Result"]["ResultData"]["GRID"]["DATA"]["ROW"]
    return [{cell["ALIAS_NAME"]: cell["VALUE"] for cell in row["CELL"]} for row in rows]


def filtered(http, server, filters: list[dict[str, Any]], **extra: Any) -> list[str]:
    payload = body(MULTIADDON_FILTERS={"MADDON_FILTER": filters}, **extra)
    response = post(http, server, payload)
    assert response.status_code == 200, response.text
    return [row["pfs_id"] for row in shape_a_rows(response)]


def error_of(response: requests.Response) -> dict[str, str]:
    data = response.json()
    assert data["Result"] is None
    return data["ErrorAlert"][0]


def as_date(value: str) -> dt.datetime:
    return dt.datetime.strptime(value, "%m/%d/%Y %H:%M" if " " in value else "%m/%d/%Y")


def as_number(value: str) -> float:
    return float(value.replace(",", ""))


def record_url(server, key: str) -> str:
    return f"{server.url}/axis/restservices/pfa/{key}"
