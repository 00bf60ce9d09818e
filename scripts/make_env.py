"""Write a .env from .env.example with freshly generated DJANGO_SECRET_KEY, JWT_SIGNING_KEY and
PFASYNC_ENCRYPTION_KEY. An existing .env is never overwritten: only a generated key it lacks (or
leaves empty) is filled in, so an older .env gains a key that became required."""

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


def fill_in(lines: list[str]) -> tuple[list[str], list[str]]:
    """`lines` with each empty generated key given its value, and the names filled in."""
    filled, names = [], []
    for line in lines:
        name = line.split("=", 1)[0]
        if name in generated and line.strip() == f"{name}=":
            line = f"{name}={generated[name]}"
            names.append(name)
        filled.append(line)
    return filled, names


if target.exists():
    lines, names = fill_in(target.read_text().splitlines())
    present = {line.split("=", 1)[0].strip() for line in lines if "=" in line and not line.lstrip().startswith("#")}
    missing = [name for name in generated if name not in present]
    lines += [f"{name}={generated[name]}" for name in missing]
    if names or missing:
        target.write_text("\n".join(lines) + "\n")
        print(f"Added {', '.join(names + missing)} to {target}.")
    sys.exit(0)
lines, _ = fill_in(example.read_text().splitlines())
target.write_text("\n".join(lines) + "\n")
target.chmod(0o600)
print(f"Wrote {target} with generated keys.")
