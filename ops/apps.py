"""The ops app: health probes, Prometheus metrics and alerts for the people who run pfasync, watching
the sync from outside (see `OpsConfig.ready`)."""

from django.apps import AppConfig


class OpsConfig(AppConfig):
    name = "ops"
    verbose_name = "Operations"

    def ready(self) -> None:
        from django_q.signals import post_spawn

        from mirror import pems
        from ops import heartbeat, metrics, pems_calls, tick
        from synclog import signals

        # Ops watches from outside: mirror and synclog never import it. It registers as the PEMS
        # client's call observer (every call of this process counted; the counts reach the
        # database in batches), and receives the sync's run and tick signals.
        pems.call_observer_register(pems_calls.pems_call_observe)
        signals.run_ended.connect(metrics.on_run_ended, dispatch_uid="ops-run-figures")
        signals.tick_ended.connect(tick.on_tick_ended, dispatch_uid="ops-tick")
        # A worker process starting is a cluster seen (readiness), before its first tick.
        post_spawn.connect(heartbeat.on_worker_spawn, dispatch_uid="ops-worker-seen")
