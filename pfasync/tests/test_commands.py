"""The project's management commands explain themselves: every option of every command has help."""

import argparse

import pytest
from django.apps import apps
from django.core.management import get_commands, load_command_class

PROJECT_APPS = {"mirror", "synclog", "ops"}


def project_commands() -> list[tuple[str, str]]:
    assert {config.name for config in apps.get_app_configs()} >= PROJECT_APPS
    return sorted((app, name) for name, app in get_commands().items() if app in PROJECT_APPS)


def test_there_are_project_commands_to_check():
    assert {"sync_pems", "pems_simulator", "add_organization"} <= {name for _, name in project_commands()}


@pytest.mark.parametrize(("app", "name"), project_commands())
def test_every_option_of_the_command_has_help(app, name):
    command = load_command_class(app, name)
    assert command.help.strip(), f"{name} has no help"
    parser = command.create_parser("manage.py", name)
    without = [
        action.option_strings[0] if action.option_strings else action.dest
        for action in parser._actions
        if action.help is not argparse.SUPPRESS and not (action.help or "").strip()
    ]
    assert without == [], f"{name}: options without help: {without}"
