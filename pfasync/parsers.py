"""The API's JSON body parser (REST_FRAMEWORK["DEFAULT_PARSER_CLASSES"]) and the text rule it checks.

A module of its own: DRF imports its parsers while `rest_framework.views` loads, so this module must
not import that (as `pfasync.api` does).
"""

import json
from typing import Any

from django.conf import settings
from rest_framework import exceptions, status
from rest_framework.parsers import JSONParser

NUL_MESSAGE = "Contains a NUL character."
SURROGATE_MESSAGE = "Contains a lone surrogate: not valid Unicode text."


def text_problem(value: str) -> str | None:
    """Why `value` cannot be stored as text (PostgreSQL refuses NUL; UTF-8 has no lone surrogate), or None."""
    if "\x00" in value:
        return NUL_MESSAGE
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return SURROGATE_MESSAGE
    return None


def printable(name: str) -> str:
    """A key as it can be named in an answer (a lone surrogate escaped)."""
    return name.encode("utf-8", "backslashreplace").decode("utf-8")


def text_problems(data: Any) -> dict[str, list[str]]:
    """Every string in a parsed JSON document, keys too, checked by `text_problem`: the path of each
    bad one (`values.monthlyRate`, `pfaIds[3]`) -> its problem. A loop, not recursion: the document
    may be as deep as the JSON decoder allows."""
    problems: dict[str, list[str]] = {}
    pending: list[tuple[str, Any]] = [("", data)]
    while pending:
        path, item = pending.pop()
        if isinstance(item, str):
            if problem := text_problem(item):
                problems[path or "nonFieldErrors"] = [problem]
        elif isinstance(item, dict):
            for key, value in item.items():
                where = f"{path}.{printable(key)}" if path else printable(key)
                if problem := text_problem(key):
                    problems[where] = ["The key: " + problem[0].lower() + problem[1:]]
                pending.append((where, value))
        elif isinstance(item, list):
            pending.extend((f"{path}[{index}]", value) for index, value in enumerate(item))
    return problems


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _float_finite(text: str) -> float:
    number = float(text)
    if number in (float("inf"), float("-inf")):
        raise ValueError(f"{text[:20]} is out of range")
    return number


class BodyTooLarge(exceptions.APIException):
    """A 413: the body is over API_MAX_BODY_BYTES (`pfasync.api` answers it as PAYLOAD_TOO_LARGE)."""

    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "payload_too_large"


def body_too_large() -> BodyTooLarge:
    return BodyTooLarge(f"The body is over {settings.API_MAX_BODY_BYTES} bytes (API_MAX_BODY_BYTES).")


class JsonParser(JSONParser):
    """JSON bodies, at most API_MAX_BODY_BYTES (a 413 before anything is parsed: the declared length is
    checked first, and at most the limit is read whatever the length says), strict JSON (no NaN or
    Infinity, no number that overflows), and no NUL or lone surrogate in any string or key (a 400 naming
    where). DRF reads the body from the stream, so Django's DATA_UPLOAD_MAX_MEMORY_SIZE never applies."""

    def parse(self, stream, media_type=None, parser_context=None) -> Any:
        limit = settings.API_MAX_BODY_BYTES
        request = (parser_context or {}).get("request")
        meta = request.META if request is not None else {}
        try:
            declared = int(meta.get("CONTENT_LENGTH") or 0)
        except ValueError:
            declared = 0
        if declared > limit:
            raise body_too_large()
        body = stream.read(limit + 1) if stream is not None else b""
        if len(body) > limit:
            raise body_too_large()
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        try:
            data = json.loads(body.decode(encoding), parse_constant=_refuse_constant, parse_float=_float_finite)
        except (ValueError, RecursionError) as error:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            raise exceptions.ParseError(f"JSON parse error - {str(error)[:200]}") from None
        if problems := text_problems(data):
            raise exceptions.ValidationError(problems)
        return data
