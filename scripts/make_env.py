"""Write a .env from .env.example with freshly generated DJANGO_SECRET_KEY and PFASYNC_ENCRYPTION_KEY."""

import base64
import os
import secrets
import sys
from pathlib import Path

example, target = Path(sys.argv[1]), Path(sys.argv[2])
if target.exists():
    sys.exit(0)
generated = {
    "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
    "PFASYNC_ENCRYPTION_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode(),
}
lines = []
for line in example.read_text().splitlines():
    name = line.split("=", 1)[0]
    lines.append(f"{name}={generated[name]}" if name in generated and line.strip() == f"{name}=" else line)
target.write_text("\n".join(lines) + "\n")
target.chmod(0o600)
print(f"Wrote {target} with generated keys.")
