"""`manage.py add_organization`: create or update an organization and its PEMS read connection."""

import os

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from mirror.models import ApiConfiguration
from mirror.pems import DEFAULT_PAGE_SIZE
from mirror.services import organization_register


class Command(BaseCommand):
    help = (
        "Create or update an organization and its PEMS read connection. The secret is read from the "
        "environment variable named by --password-env, never from the command line."
    )

    def add_arguments(self, parser):
        parser.add_argument("code", help="PEMS organization code, e.g. RIO")
        parser.add_argument("--name", required=True, help='display name, e.g. "Rio Grande"')
        parser.add_argument("--pems-url", required=True, help="PEMS base URL, e.g. https://eam.example.com")
        parser.add_argument("--tenant", required=True, help="PEMS tenant, e.g. ACME_PRD")
        parser.add_argument("--username", default="", help="PEMS user (required with --auth basic)")
        parser.add_argument(
            "--password-env",
            required=True,
            metavar="VAR",
            help="environment variable holding the password (or API key)",
        )
        parser.add_argument(
            "--auth",
            choices=ApiConfiguration.AuthType.values,
            default="basic",
            help="how to sign in to PEMS: a username and password, or an API key (default: basic)",
        )
        parser.add_argument(
            "--endpoint",
            choices=ApiConfiguration.Endpoint.values,
            default="grids",
            help="the grid endpoint: grids (current tenants, the default) or griddata (older ones)",
        )
        parser.add_argument(
            "--timezone",
            required=True,
            metavar="ZONE",
            help="the tenant's IANA time zone, e.g. America/Chicago (PEMS times carry no offset)",
        )
        parser.add_argument(
            "--page-size", type=int, default=DEFAULT_PAGE_SIZE, help=f"rows per PEMS page (default {DEFAULT_PAGE_SIZE})"
        )
        parser.add_argument("--pems-org", default="", help="PEMS organization code if it differs from CODE")

    def handle(self, *args, **options):
        secret = os.environ.get(options["password_env"])
        if not secret:
            raise CommandError(f"Environment variable {options['password_env']} is not set or empty.")
        if options["auth"] == "basic" and not options["username"]:
            raise CommandError("--username is required with basic authentication.")
        try:
            organization, created = organization_register(
                code=options["code"],
                name=options["name"],
                base_url=options["pems_url"],
                tenant=options["tenant"],
                username=options["username"],
                secret=secret,
                auth_type=options["auth"],
                endpoint=options["endpoint"],
                time_zone=options["timezone"],
                page_size=options["page_size"],
                pems_organization_code=options["pems_org"],
            )
        except ValidationError as error:
            # The secret came from the environment: name the variable, never the value.
            names = {"secret": f"secret (from {options['password_env']})"}
            problems = "; ".join(
                f"{names.get(field, field)}: {' '.join(messages)}" for field, messages in error.message_dict.items()
            )
            raise CommandError(f"Invalid organization or PEMS connection: {problems}") from None
        verb = "Created" if created else "Updated"
        self.stdout.write(self.style.SUCCESS(f"{verb} organization {organization.code} ({organization.name})."))
