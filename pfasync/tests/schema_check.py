"""The check behind conftest.py's `api_answers_match_the_schema`: an API answer against the OpenAPI
schema the API publishes (drf-spectacular's, built once per test session).

OpenAPI 3.0's schema objects are read as JSON Schema: `nullable` becomes a null alternative, and an
object that lists its properties admits no other key (an answer's undocumented key is drift too).
Answers to paths or methods the schema does not describe (the JSON 404 of unknown paths, the docs)
are not checked.
"""

import json
from functools import cache
from typing import Any

import jsonschema

# Answers any operation may give without declaring them: DRF's own refusals of a method, an Accept
# or a Content-Type it does not serve.
_UNDECLARED_ALLOWED = {405, 406, 415}


@cache
def _operations() -> dict[tuple[str, ...], dict[str, Any]]:
    """The schema's operations: path segments (None for a parameter) -> method -> responses."""
    from drf_spectacular.generators import SchemaGenerator

    schema = SchemaGenerator().get_schema(request=None, public=True)
    components = schema.get("components", {}).get("schemas", {})
    operations = {}
    for template, methods in schema["paths"].items():
        key = tuple(None if part.startswith("{") else part for part in template.strip("/").split("/"))
        operations[key] = {
            method.upper(): {
                status: _json_schema(answer["content"]["application/json"]["schema"], components)
                if "application/json" in answer.get("content", {})
                else None
                for status, answer in operation["responses"].items()
            }
            for method, operation in methods.items()
            if isinstance(operation, dict) and "responses" in operation
        }
    return operations


def _json_schema(node: Any, components: dict[str, Any]) -> Any:
    """An OpenAPI 3.0 schema object as plain JSON Schema, references resolved."""
    if isinstance(node, list):
        return [_json_schema(item, components) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        return _json_schema(components[node["$ref"].rsplit("/", 1)[-1]], components)
    converted = {
        name: _json_schema(value, components) if name not in ("enum", "required", "example") else value
        for name, value in node.items()
        if name not in ("nullable", "readOnly", "writeOnly", "example", "description", "discriminator")
    }
    if "properties" in converted and "additionalProperties" not in converted:
        converted["additionalProperties"] = False
    if "properties" in node:  # property names are data, not keywords
        converted["properties"] = {name: _json_schema(value, components) for name, value in node["properties"].items()}
    if node.get("nullable"):
        return {"anyOf": [converted, {"type": "null"}]}
    return converted


def _operation(path: str, method: str) -> dict[str, Any] | None:
    parts = tuple(path.strip("/").split("/"))
    for key, methods in _operations().items():
        if len(key) == len(parts) and all(want is None or want == part for want, part in zip(key, parts, strict=True)):
            return methods.get(method)
    return None


def api_answer_check(response) -> None:
    """AssertionError when `response`, an answer to a documented operation, is not as documented."""
    request = response.request
    path, method = request.get("PATH_INFO", ""), request.get("REQUEST_METHOD", "GET").upper()
    if not path.startswith("/api/"):
        return
    responses = _operation(path, method)
    if responses is None:
        return
    status = str(response.status_code)
    if status not in responses:
        assert response.status_code in _UNDECLARED_ALLOWED, (
            f"{method} {path} answered {status}, which its schema does not declare ({', '.join(responses)})"
        )
        return
    schema = responses[status]
    if schema is None:
        return
    assert response.get("Content-Type", "").startswith("application/json"), f"{method} {path}: not JSON"
    body = json.loads(response.content)
    try:
        jsonschema.validate(body, schema)
    except jsonschema.ValidationError as error:
        where = "/".join(str(part) for part in error.absolute_path) or "(the body)"
        raise AssertionError(f"{method} {path} {status} differs from its schema at {where}: {error.message}") from None
    if isinstance(body, dict) and isinstance(body.get("fields"), dict):
        # An unknown key is named as the caller sent it; every other field as the API names it.
        snake = [
            name for name, messages in body["fields"].items() if "_" in name and not messages[0].startswith("Unknown")
        ]
        assert not snake, f"{method} {path}: fields named otherwise than the API names them: {snake}"
