"""The ops endpoints: `/healthz` (liveness), `/readyz` (readiness) and `/metrics` (Prometheus).

Plain Django views, outside the API: no session, no JWT, no login. The probes answer anyone and say
nothing but each check's state; /metrics answers only with `Authorization: Bearer <METRICS_TOKEN>`
and does not exist (404) while METRICS_TOKEN is unset.
"""

import hmac

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseNotFound, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from ops.health import OK, readiness
from ops.metrics import metrics_text


@never_cache
@require_safe
def healthz(request: HttpRequest) -> JsonResponse:
    """The process answers (nothing else is checked: a database outage must not restart it)."""
    return JsonResponse({"status": OK})


@never_cache
@require_safe
def readyz(request: HttpRequest) -> JsonResponse:
    """200 when every check is `ok`, else 503; the body names each check and its state."""
    checks = readiness()
    ready = all(state == OK for state in checks.values())
    return JsonResponse({"status": OK if ready else "unavailable", "checks": checks}, status=200 if ready else 503)


@never_cache
@require_safe
def metrics(request: HttpRequest) -> HttpResponse:
    token = settings.METRICS_TOKEN
    if not token:
        return HttpResponseNotFound("Not found.\n", content_type="text/plain")
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(credentials.strip().encode(), token.encode()):
        response = HttpResponse("A bearer token is required.\n", status=401, content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(metrics_text(), content_type=CONTENT_TYPE_PLAIN_0_0_4)
