"""The ops app: health probes, Prometheus metrics, structured logs and alerts for the people who run pfasync."""

from django.apps import AppConfig


class OpsConfig(AppConfig):
    name = "ops"
    verbose_name = "Operations"

    def ready(self) -> None:
        from django_q.signals import post_spawn

        from mirror import pems
        from ops import heartbeat, pems_calls

        # Count every PEMS call of this process; the counts reach the database in batches.
        pems.call_observer = pems_calls.pems_call_observe
        # A worker process starting is a cluster seen (readiness), before its first tick.
        post_spawn.connect(heartbeat.on_worker_spawn, dispatch_uid="ops-worker-seen")
