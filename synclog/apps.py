"""The synclog app: sync runs, what happened in them, the sync engine and its interfaces."""

from django.apps import AppConfig


class SynclogConfig(AppConfig):
    name = "synclog"
    verbose_name = "PEMS sync"
