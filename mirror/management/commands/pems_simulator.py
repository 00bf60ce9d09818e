"""Serve the PEMS simulator over HTTP until SIGINT or SIGTERM."""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from mirror.simulator import (
    DEFAULT_API_KEY,
    DEFAULT_PASSWORD,
    DEFAULT_TENANT,
    DEFAULT_TIME_ZONE,
    DEFAULT_USERNAME,
    PemsSimulator,
    SimulatorServer,
    parse_orgs,
)


class Command(BaseCommand):
    """Generate the data, serve it, stop cleanly on a signal."""

    help = "Run a PEMS simulator (grid, count and record endpoints plus /_sim/ controls) for demos and benchmarks."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
        parser.add_argument(
            "--port", type=int, default=8900, help="port to listen on; 0 picks a free one (default 8900)"
        )
        parser.add_argument("--orgs", default="RIO=50000,HOU=20000", help="ORG=COUNT[,ORG=COUNT...]")
        parser.add_argument(
            "--seed", type=int, default=1, help="seed of the generated rows: the same seed, the same data"
        )
        parser.add_argument(
            "--tenant", default=DEFAULT_TENANT, help=f"the tenant it accepts (default {DEFAULT_TENANT})"
        )
        parser.add_argument(
            "--username", default=DEFAULT_USERNAME, help=f"the user it accepts (default {DEFAULT_USERNAME})"
        )
        parser.add_argument(
            "--password-env",
            default="PEMS_SIMULATOR_PASSWORD",
            help="environment variable holding the password (default password if unset)",
        )
        parser.add_argument(
            "--api-key-env",
            default="PEMS_SIMULATOR_API_KEY",
            help="environment variable holding the API key (default key if unset)",
        )
        parser.add_argument(
            "--row-cap",
            type=int,
            default=10000,
            help="most rows a grid page answers, whatever is asked (default 10000)",
        )
        parser.add_argument(
            "--time-zone",
            default=DEFAULT_TIME_ZONE,
            help=f"the tenant's IANA time zone; PEMS's times are local to it, without offset (default {DEFAULT_TIME_ZONE})",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            orgs = parse_orgs(options["orgs"])
        except ValueError as error:
            raise CommandError(str(error)) from None
        if options["row_cap"] < 1:
            raise CommandError("--row-cap must be 1 or more")
        password = os.environ.get(options["password_env"]) or DEFAULT_PASSWORD
        api_key = os.environ.get(options["api_key_env"]) or DEFAULT_API_KEY
        self.stdout.write(f"Generating {sum(orgs.values()):,} rows...")
        try:
            simulator = PemsSimulator(
                orgs=orgs,
                seed=options["seed"],
                tenant=options["tenant"],
                users={options["username"]: password},
                api_keys={api_key},
                row_cap=options["row_cap"],
                time_zone=options["time_zone"],
            )
        except (ValueError, LookupError) as error:
            raise CommandError(str(error)) from None

        stop = threading.Event()
        # Signal handlers only set the event; the main thread does the shutdown.
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            server = SimulatorServer(simulator, host=options["host"], port=options["port"]).start()
        except OSError as error:
            raise CommandError(f"cannot listen on {options['host']}:{options['port']}: {error}") from None
        summary = ", ".join(f"{org}={count:,}" for org, count in orgs.items())
        self.stdout.write(f"PEMS simulator listening on {server.url} (tenant {options['tenant']}, orgs {summary})")
        try:
            while not stop.wait(0.5):
                pass
        finally:
            server.stop()
        self.stdout.write("PEMS simulator stopped.")
