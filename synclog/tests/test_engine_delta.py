"""What a read does to the delta layer: merged rows follow PEMS's new values under the edits,
deletions hold open modifications, and only a read that changed something refreshes the KPI views."""

from dataclasses import replace
from decimal import Decimal

import pytest
from django.contrib.auth.models import User

from mirror import delta
from mirror.models import PfaMergedLive, PfaModification, ViewRefresh
from mirror.pems import PemsClient
from synclog.engine import sync_run
from synclog.models import PfaSyncLog, SyncStatus
from synclog.runs import sync_claim

pytestmark = pytest.mark.django_db


def run(organization, *, sync_type="full") -> PfaSyncLog:
    sync_log = sync_claim(organization=organization, trigger="command", sync_type=sync_type)
    settings = replace(sync_log.api_configuration.pems_settings(organization), backoff_base=0.001, backoff_max=0.001)
    with PemsClient(settings, sleep=lambda seconds: None) as client:
        sync_run(sync_log=sync_log, client=client)
    sync_log.refresh_from_db()
    assert sync_log.status == SyncStatus.COMPLETED, sync_log.error_message
    return sync_log


def refresh_requests() -> int:
    return ViewRefresh.objects.values_list("requested", flat=True).first() or 0


def test_a_read_keeps_committed_edits_on_top_of_pems_new_values(rio, pems_server):
    simulator = pems_server.simulator
    run(rio)
    ann = User.objects.create_user("ann")
    delta.draft_save(organization=rio, pfa_id="PFA-0000001", user=ann, values={"monthly_rate": "4321"})
    delta.drafts_commit(organization=rio, user=ann)
    simulator.update_row("RIO", "PFA-0000001", {"pfs_f_model": "New in PEMS"})
    run(rio)
    merged = PfaMergedLive.objects.get(organization=rio, pfa_id="PFA-0000001")
    assert (merged.model, merged.monthly_rate) == ("New in PEMS", Decimal("4321.0000"))


def test_a_record_deleted_in_pems_holds_its_open_modifications(rio, pems_server):
    run(rio)
    ann = User.objects.create_user("ann")
    bob = User.objects.create_user("bob")
    delta.draft_save(organization=rio, pfa_id="PFA-0000002", user=ann, values={"dor": "BEO2"})
    delta.draft_save(organization=rio, pfa_id="PFA-0000002", user=bob, values={"dor": "BEO3"})
    delta.drafts_commit(organization=rio, user=bob)
    pems_server.simulator.delete_row("RIO", "PFA-0000002")
    assert run(rio).records_deleted == 1
    held = PfaModification.objects.filter(pfa_id="PFA-0000002")
    assert {m.state for m in held} == {PfaModification.State.DRAFT, PfaModification.State.COMMITTED}
    assert not held.to_write().exists()
    assert not PfaMergedLive.objects.filter(pfa_id="PFA-0000002").exists()


def test_only_a_read_that_changed_rows_asks_for_a_refresh(rio, pems_server):
    run(rio)
    after_first = refresh_requests()
    assert after_first >= 1
    run(rio)
    run(rio, sync_type="incremental")
    assert refresh_requests() == after_first  # nothing changed: nothing to refresh
    pems_server.simulator.update_row("RIO", "PFA-0000003", {"pfs_f_model": "Changed"})
    run(rio, sync_type="incremental")
    assert refresh_requests() == after_first + 1


def test_the_tick_starts_a_refresh_asked_for_while_the_broker_was_down(monkeypatch):
    from django_q.conf import Conf

    from mirror.materialized import views_refresh_pending
    from synclog.worker import sync_tick

    monkeypatch.setattr(Conf, "SYNC", True)  # django-q2 runs the enqueued task inline
    ViewRefresh.objects.create(requested=3, refreshed=1)
    assert views_refresh_pending()
    sync_tick()
    state = ViewRefresh.objects.get()
    assert not views_refresh_pending() and state.last_refreshed_at is not None
