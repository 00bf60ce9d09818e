"""Write a .env from .env.example with freshly generated DJANGO_SECRET_KEY, JWT_SIGNING_KEY and
PFASYNC_ENCRYPTION_KEY, and a local machine's settings (LOCAL below: the embedded PostgreSQL server, the
PEMS simulator's plain http), so that every `manage.py` command works in a fresh terminal with nothing
exported. An existing .env is never overwritten: only a generated key it lacks (or leaves empty) is filled
in, and a local setting it lacks is added, so an older .env gains what became required."""

import base64
import os
import secrets
import sys
from pathlib import Path

example, target = Path(sys.argv[1]), Path(sys.argv[2])
generated = {
    "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
    "JWT_SIGNING_KEY": secrets.token_urlsafe(50),
    "PFASYNC_ENCRYPTION_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode(),
}
# A local machine's values for settings whose .env.example default is the production one.
LOCAL = {
    # No DATABASE_URL: the embedded PostgreSQL server in .pgdata/ (docs/decisions/0010).
    "PFASYNC_EMBEDDED_POSTGRES": "true",
    # The demo's PEMS simulator speaks plain http.
    "PEMS_ALLOW_HTTP": "true",
}


def fill_in(lines: list[str], *, local: bool) -> tuple[list[str], list[str]]:
    """`lines` with each empty generated key given its value (and, if `local`, each LOCAL setting its
    local value), and the names filled in."""
    filled, names = [], []
    for line in lines:
        name = line.split("=", 1)[0]
        if name in generated and line.strip() == f"{name}=":
            line = f"{name}={generated[name]}"
            names.append(name)
        elif local and name in LOCAL:
            line = f"{name}={LOCAL[name]}"
        filled.append(line)
    return filled, names


if target.exists():
    # An existing .env keeps the values it has (a deliberate PEMS_ALLOW_HTTP=false stays false).
    lines, names = fill_in(target.read_text().splitlines(), local=False)
    present = {line.split("=", 1)[0].strip() for line in lines if "=" in line and not line.lstrip().startswith("#")}
    missing = [name for name in generated if name not in present]
    lines += [f"{name}={generated[name]}" for name in missing]
    missing_local = [name for name in LOCAL if name not in present]
    lines += [f"{name}={LOCAL[name]}" for name in missing_local]
    if names or missing or missing_local:
        target.write_text("\n".join(lines) + "\n")
        print(f"Added {', '.join(names + missing + missing_local)} to {target}.")
    sys.exit(0)
lines, _ = fill_in(example.read_text().splitlines(), local=True)
target.write_text("\n".join(lines) + "\n")
target.chmod(0o600)
print(f"Wrote {target} with generated keys, for this machine: {', '.join(f'{k}={v}' for k, v in LOCAL.items())}.")
