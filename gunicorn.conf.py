"""gunicorn's configuration for pfasync's web process (API, admin, dashboard); see docs/decisions/0011.

`gunicorn` reads this file from the working directory (`make serve`, the Procfile's `web`). Every value
comes from the environment, so one file serves a laptop and a container:

WEB_BIND               address to listen on; default 0.0.0.0:$PORT when PORT is set, else 127.0.0.1:8000
WEB_WORKERS            worker processes; default 2 x CPUs + 1, at most 8
WEB_THREADS            threads per worker; default 1 (sync workers), more runs gthread workers
WEB_TIMEOUT            seconds a request may take before its worker is killed and replaced; default 60
WEB_GRACEFUL_TIMEOUT   seconds in-flight requests get to finish on TERM or HUP; default 30
WEB_MAX_REQUESTS       requests after which a worker is replaced (bounds slow leaks); default 2000, 0: never
FORWARDED_ALLOW_IPS    proxies whose X-Forwarded-Proto/-For gunicorn trusts; default 127.0.0.1,::1

Signals: TERM stops gracefully (no new connections, in-flight requests finish within the graceful
timeout), HUP reloads (new workers start with the new code and settings, old ones finish their requests),
INT/QUIT stop at once.
"""

import multiprocessing
import os

wsgi_app = "pfasync.wsgi:application"

_port = os.environ.get("PORT", "")
bind = [os.environ.get("WEB_BIND") or (f"0.0.0.0:{_port}" if _port else "127.0.0.1:8000")]
workers = int(os.environ.get("WEB_WORKERS") or min(2 * multiprocessing.cpu_count() + 1, 8))
threads = int(os.environ.get("WEB_THREADS") or 1)
timeout = int(os.environ.get("WEB_TIMEOUT") or 60)
graceful_timeout = int(os.environ.get("WEB_GRACEFUL_TIMEOUT") or 30)
max_requests = int(os.environ.get("WEB_MAX_REQUESTS") or 2000)
# Spread the replacements so that all workers do not restart at once.
max_requests_jitter = max_requests // 10
# Idle keep-alive connections from a proxy: a little longer than nothing, shorter than most proxies' own.
keepalive = 5

# Behind a TLS-terminating proxy: its X-Forwarded-Proto makes wsgi.url_scheme https, but only from these
# addresses (gunicorn's own FORWARDED_ALLOW_IPS); Django's DJANGO_SECURE reads the same header.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")
secure_scheme_headers = {"X-FORWARDED-PROTO": "https"}

# Logs go to stdout/stderr, for the process manager to collect. One access line per request: client,
# the client the proxy saw, request, status, bytes, duration in ms, user agent.
accesslog = "-"
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
access_log_format = '%(h)s %({x-forwarded-for}i)s "%(r)s" %(s)s %(b)s %(M)sms "%(a)s"'

# Workers' heartbeat files in memory, not on a container's overlay disk (a slow disk looks like a hung worker).
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
# Control is by signals (above); no control socket, which would default to one shared path per user.
control_socket_disable = True
proc_name = "pfasync-web"
