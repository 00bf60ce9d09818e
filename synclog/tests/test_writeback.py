"""Write runs against the simulator over HTTP: clean writes, rebases, conflicts, order, exactly
once, PEMS's errors, the mirror that never goes back, and one write run per organization."""

import threading
from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.db import connection

from mirror import delta
from mirror.models import PfaMirror, PfaModification
from mirror.purge import pfa_deleted_purge
from mirror.records import parse_pfa_row
from mirror.store import pfa_records_upsert
from mirror.tests.factories import ApiConfigurationFactory, OrganizationFactory
from ops.tests.runs import fast_client, run_sync
from synclog.models import PfaSyncLog, SyncStatus
from synclog.runs import SyncAlreadyRunning, sync_claim

pytestmark = pytest.mark.django_db

State = PfaModification.State
KEY = "PFA-0000007"


@pytest.fixture
def rio(pems_server):
    organization = ApiConfigurationFactory(
        organization=OrganizationFactory(code="RIO"), base_url=pems_server.url
    ).organization
    assert run_sync(organization).status == SyncStatus.COMPLETED
    return organization


@pytest.fixture
def simulator(pems_server):
    return pems_server.simulator


@pytest.fixture
def ann():
    return User.objects.create_user("ann")


@pytest.fixture
def bob():
    return User.objects.create_user("bob")


def commit(organization, user, values: dict, pfa_id: str = KEY) -> PfaModification:
    delta.draft_save(organization=organization, pfa_id=pfa_id, user=user, values=values)
    delta.drafts_commit(organization=organization, user=user, pfa_ids=[pfa_id])
    return PfaModification.objects.get(organization=organization, pfa_id=pfa_id, author=user, state=State.COMMITTED)


def write(organization, **client_overrides) -> PfaSyncLog:
    return run_sync(organization, direction=PfaSyncLog.Direction.WRITE, **client_overrides)


def patches(simulator) -> int:
    return sum(1 for entry in simulator.requests if entry["method"] == "PATCH")


def mirror_row(organization, pfa_id: str = KEY) -> PfaMirror:
    return PfaMirror.objects.get(organization=organization, pfa_id=pfa_id)


def test_a_clean_write_reaches_pems_and_the_mirror_and_the_next_read_finds_it_unchanged(rio, simulator, ann):
    before = mirror_row(rio)
    modification = commit(rio, ann, {"monthly_rate": "5200.5", "forecast_end_date": "2028-02-29"})
    run = write(rio)
    assert (run.status, run.records_total, run.records_written, run.records_conflicts) == ("completed", 1, 1, 0)
    (status,) = planner_client(rio, username="viewer").get(f"/api/sync/status/{run.pk}").json()["logs"]
    assert (status["direction"], status["recordsWritten"], status["recordsConflicts"]) == ("write", 1, 0)
    row = simulator.get_row("RIO", KEY)
    assert (row["pfs_f_rental"], row["pfs_f_enddate"]) == ("5,200.50", "02/29/2028")
    assert int(row["pfs_recordid"]) == before.pems_record_id + 1
    after = mirror_row(rio)
    assert after.monthly_rate == Decimal("5200.5") and after.pems_record_id == before.pems_record_id + 1
    assert after.version == before.version + 1
    modification.refresh_from_db()
    assert modification.state == State.WRITTEN and modification.written_record_id == after.pems_record_id
    reread = run_sync(rio)
    assert (reread.records_updated, reread.records_inserted) == (0, 0)  # the mirror had it already
    assert patches(simulator) == 1


def test_a_change_pems_took_meanwhile_in_another_field_is_merged_and_rebased(rio, simulator, ann):
    modification = commit(rio, ann, {"monthly_rate": "777"})
    simulator.update_row("RIO", KEY, {"pfs_f_model": "Changed in PEMS"})
    run = write(rio)
    assert (run.records_written, run.records_rebased, run.records_conflicts) == (1, 1, 0)
    row = simulator.get_row("RIO", KEY)
    assert (row["pfs_f_rental"], row["pfs_f_model"]) == ("777.00", "Changed in PEMS")
    assert mirror_row(rio).model == "Changed in PEMS"
    modification.refresh_from_db()
    assert modification.state == State.WRITTEN


def test_the_same_field_changed_in_pems_is_a_conflict_and_nothing_is_written(rio, simulator, ann):
    base = mirror_row(rio).dor
    modification = commit(rio, ann, {"dor": "MINE"})
    simulator.update_row("RIO", KEY, {"pfs_f_dor": "THEIRS"})
    sent = patches(simulator)
    run = write(rio)
    assert (run.records_written, run.records_conflicts) == (0, 1)
    modification.refresh_from_db()
    assert modification.state == State.CONFLICT
    assert modification.conflict == {"dor": {"base": base, "mine": "MINE", "theirs": "THEIRS"}}
    assert simulator.get_row("RIO", KEY)["pfs_f_dor"] == "THEIRS"
    assert mirror_row(rio).dor == "THEIRS"  # refreshed from PEMS's record
    assert patches(simulator) == sent + 1  # the first try, refused; no second


def test_several_users_edits_of_one_record_are_written_in_commit_order(rio, simulator, ann, bob):
    commit(rio, ann, {"monthly_rate": "1000", "dor": "ANN"})
    commit(rio, bob, {"monthly_rate": "2000"})
    run = write(rio)
    assert (run.records_written, run.records_conflicts, run.records_rebased) == (2, 0, 0)
    row = simulator.get_row("RIO", KEY)
    assert (row["pfs_f_rental"], row["pfs_f_dor"]) == ("2,000.00", "ANN")  # the later commit wins a field
    assert patches(simulator) == 2
    written = PfaModification.objects.filter(state=State.WRITTEN).in_commit_order()
    assert [m.author.username for m in written] == ["ann", "bob"]
    assert written[0].written_record_id + 1 == written[1].written_record_id


def test_a_patch_pems_took_before_the_worker_died_is_not_applied_twice(rio, simulator, ann):
    modification = commit(rio, ann, {"monthly_rate": "4321"})
    # The dead worker: it marked the modification writing and PEMS took its PATCH; nothing more.
    delta.modification_writing(modification)
    with fast_client(rio) as client:
        client.patch_record(KEY, str(modification.base_record_id), {"pfs_f_rental": "4,321.00"})
    recordid = simulator.get_row("RIO", KEY)["pfs_recordid"]
    sent = patches(simulator)
    run = write(rio)
    assert (run.records_written, run.records_conflicts) == (1, 0)
    assert patches(simulator) == sent + 1  # refused as stale; no second write
    assert simulator.get_row("RIO", KEY)["pfs_recordid"] == recordid
    modification.refresh_from_db()
    assert modification.state == State.WRITTEN


def test_a_record_deleted_in_pems_fails_its_modification(rio, simulator, ann):
    modification = commit(rio, ann, {"dor": "X"})
    simulator.delete_row("RIO", KEY)
    run = write(rio)
    assert (run.status, run.records_errored) == ("completed", 1)
    modification.refresh_from_db()
    assert modification.state == State.FAILED and "deleted in PEMS" in modification.error_message


def test_a_value_pems_rejects_fails_the_modification_and_is_not_retried(rio, simulator, ann):
    modification = commit(rio, ann, {"dor": "X"})
    simulator.inject_fault("status", status=400, target="record")
    run = write(rio)
    assert run.records_errored == 1 and patches(simulator) == 1
    modification.refresh_from_db()
    assert modification.state == State.FAILED and "PEMS refused the change" in modification.error_message


@pytest.mark.parametrize("status", [429, 503])
def test_pems_overloaded_for_a_moment_is_retried_within_the_run(rio, simulator, ann, status):
    modification = commit(rio, ann, {"dor": "X"})
    simulator.inject_fault("status", status=status, target="record", count=2)
    run = write(rio)
    assert (run.status, run.records_written) == ("completed", 1)
    modification.refresh_from_db()
    assert modification.state == State.WRITTEN


def test_pems_down_leaves_the_modifications_committed_and_fails_the_run(rio, simulator, ann, bob):
    first = commit(rio, ann, {"dor": "X"})
    commit(rio, bob, {"dor": "Y"}, pfa_id="PFA-0000008")
    simulator.inject_fault("status", status=503, target="record", count=100)
    run = write(rio)
    assert run.status == SyncStatus.FAILED and "2 modifications left committed" in run.error_message
    assert set(PfaModification.objects.values_list("state", flat=True)) == {State.COMMITTED}
    simulator.clear_faults()
    assert write(rio).records_written == 2
    first.refresh_from_db()
    assert first.state == State.WRITTEN


def test_credentials_pems_refuses_fail_the_run_not_the_edit(rio, simulator, ann):
    modification = commit(rio, ann, {"dor": "X"})
    run = write(rio, secret="not-the-password")
    assert run.status == SyncStatus.FAILED and "credentials" in run.error_message
    modification.refresh_from_db()
    assert modification.state == State.COMMITTED and simulator.get_row("RIO", KEY)["pfs_f_dor"] != "X"


def test_a_read_page_older_than_a_write_does_not_undo_it(rio, simulator, ann):
    pems = rio.api_configurations.get().pems_settings(rio)
    page_read_before_the_write = dict(simulator.get_row("RIO", KEY))
    commit(rio, ann, {"monthly_rate": "9999"})
    write(rio)
    old = parse_pfa_row(page_read_before_the_write, time_zone=pems.zone, organization_code="RIO")
    counts = pfa_records_upsert(organization_id=rio.pk, records=[old], synced_at=mirror_row(rio).last_synced_at)
    assert (counts.updated, counts.unchanged) == (0, 1)
    assert mirror_row(rio).monthly_rate == Decimal("9999")


def test_a_record_pems_deleted_and_created_again_is_let_in_despite_its_lower_recordid(rio, simulator, ann):
    pems = rio.api_configurations.get().pems_settings(rio)
    commit(rio, ann, {"monthly_rate": "9999"})
    write(rio)
    stored = mirror_row(rio)
    again = {**simulator.get_row("RIO", KEY), "pfs_recordid": "1", "pfs_f_model": "Created again"}
    later = stored.pems_last_modified.astimezone(pems.zone) + timedelta(minutes=5)
    again["pfs_lastmodified"] = later.strftime("%m/%d/%Y %H:%M")
    record = parse_pfa_row(again, time_zone=pems.zone, organization_code="RIO")
    assert pfa_records_upsert(organization_id=rio.pk, records=[record], synced_at=stored.last_synced_at).updated == 1
    assert (mirror_row(rio).pems_record_id, mirror_row(rio).model) == (1, "Created again")


@pytest.mark.django_db(transaction=True)
def test_one_active_write_run_per_organization_under_20_concurrent_triggers(pems_server):
    rio = ApiConfigurationFactory(organization=OrganizationFactory(code="RIO"), base_url=pems_server.url).organization
    outcomes, start = [], threading.Barrier(20)

    def trigger():
        start.wait()
        try:
            sync_claim(organization=rio, trigger="api", direction=PfaSyncLog.Direction.WRITE)
            outcomes.append("claimed")
        except SyncAlreadyRunning:
            outcomes.append("refused")
        finally:
            connection.close()

    threads = [threading.Thread(target=trigger) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["claimed"] + ["refused"] * 19
    # A read of the same organization is not held up by the write.
    sync_claim(organization=rio, trigger="api")
    assert PfaSyncLog.objects.filter(status=SyncStatus.QUEUED).count() == 2


# --- what starts a write run ---------------------------------------------------------------------


@pytest.fixture
def inline_tasks(monkeypatch):
    from django_q.conf import Conf

    monkeypatch.setattr(Conf, "SYNC", True)  # django-q2 runs an enqueued task at once, in this process


def test_a_commit_has_the_worker_write_it(rio, simulator, ann, inline_tasks, django_capture_on_commit_callbacks):
    delta.draft_save(organization=rio, pfa_id=KEY, user=ann, values={"dor": "AFTER-COMMIT"})
    with django_capture_on_commit_callbacks(execute=True):
        delta.drafts_commit(organization=rio, user=ann)
    assert simulator.get_row("RIO", KEY)["pfs_f_dor"] == "AFTER-COMMIT"
    run = PfaSyncLog.objects.get(direction="write")
    assert (run.trigger, run.triggered_by, run.records_written) == ("api", ann, 1)


def test_the_tick_writes_what_was_left(rio, simulator, ann, inline_tasks, django_capture_on_commit_callbacks):
    from synclog.worker import sync_tick

    commit(rio, ann, {"dor": "LEFT"})  # its own trigger never ran (say, the broker was down)
    with django_capture_on_commit_callbacks(execute=True):
        sync_tick()
    assert simulator.get_row("RIO", KEY)["pfs_f_dor"] == "LEFT"
    assert PfaSyncLog.objects.get(direction="write").trigger == "schedule"


def test_push_pems_writes_inline_and_prints_a_summary(rio, simulator, ann):
    from io import StringIO

    from django.core.management import call_command

    commit(rio, ann, {"dor": "PUSHED"})
    out = StringIO()
    call_command("push_pems", "--org", "rio", stdout=out)
    assert simulator.get_row("RIO", KEY)["pfs_f_dor"] == "PUSHED"
    lines = out.getvalue().splitlines()
    header = next(line for line in lines if line.startswith("Org"))
    assert header.split() == ["Org", "Status", "Total", "Written", "Rebased", "Conflicts", "Failed", "Duration"]
    assert lines[lines.index(header) + 2].split()[:4] == ["RIO", "completed", "1", "1"]


def test_the_api_trigger_queues_a_write_run_and_names_a_bad_direction(rio, ann):
    from rest_framework.test import APIClient

    from mirror.tests.factories import user_with

    commit(rio, ann, {"dor": "QUEUED"})
    client = APIClient()
    client.force_authenticate(user_with("ops", "synclog.trigger_sync", organizations=[rio]))
    response = client.post("/api/sync/trigger", {"organizationId": "RIO", "direction": "write"}, format="json")
    assert response.status_code == 202, response.content
    assert PfaSyncLog.objects.get(pk=response.json()["logId"]).direction == "write"
    again = client.post("/api/sync/trigger", {"organizationId": "RIO", "direction": "write"}, format="json")
    assert again.status_code == 409
    read = client.post("/api/sync/trigger", {"organizationId": "RIO"}, format="json")
    assert read.status_code == 202  # reads and writes of one organization may overlap
    bad = client.post("/api/sync/trigger", {"organizationId": "RIO", "direction": "sideways"}, format="json")
    assert bad.status_code == 400 and "direction" in bad.json()["fields"]


def test_the_admin_action_queues_a_write_run(rio, ann, admin_client):
    from django.urls import reverse

    commit(rio, ann, {"dor": "QUEUED"})
    response = admin_client.post(
        reverse("admin:mirror_organization_changelist"),
        {"action": "write_now", "_selected_action": [rio.pk]},
        follow=True,
    )
    assert "Write run of RIO queued" in response.content.decode()
    assert PfaSyncLog.objects.filter(direction="write", status="queued", trigger="admin").count() == 1


def test_a_write_asked_with_nothing_waiting_creates_no_run_and_says_why(rio, admin_client):
    from io import StringIO

    from django.core.management import call_command
    from django.urls import reverse
    from rest_framework.test import APIClient

    from mirror.tests.factories import user_with

    client = APIClient()
    client.force_authenticate(user_with("ops", "synclog.trigger_sync", organizations=[rio]))
    response = client.post("/api/sync/trigger", {"organizationId": "RIO", "direction": "write"}, format="json")
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["logIds"] == [] and "logId" not in body
    (skipped,) = body["skipped"]
    assert skipped["organizationCode"] == "RIO" and skipped["logId"] is None
    assert skipped["message"] == body["message"] == "Nothing to write for organization RIO: no committed edit waits."

    admin = admin_client.post(
        reverse("admin:mirror_organization_changelist"),
        {"action": "write_now", "_selected_action": [rio.pk]},
        follow=True,
    )
    assert "Nothing to write for organization RIO" in admin.content.decode()

    out = StringIO()
    call_command("push_pems", "--org", "rio", stdout=out)  # nothing left undone: no error
    assert "RIO: Nothing to write for organization RIO: no committed edit waits." in out.getvalue()
    assert not PfaSyncLog.objects.filter(direction="write").exists()


# --- resolving conflicts -------------------------------------------------------------------------


@pytest.fixture
def conflicted(rio, simulator, ann) -> PfaModification:
    """Ann's rate and dor edit, after PEMS changed the dor to THEIRS: a conflict."""
    modification = commit(rio, ann, {"dor": "MINE", "monthly_rate": "1234"})
    simulator.update_row("RIO", KEY, {"pfs_f_dor": "THEIRS"})
    assert write(rio).records_conflicts == 1
    modification.refresh_from_db()
    return modification


def planner_client(rio, *permissions, username: str = "pat"):
    from rest_framework.test import APIClient

    from mirror.tests.factories import user_with

    client = APIClient()
    client.force_authenticate(user_with(username, *permissions, organizations=[rio]))
    return client


def test_conflicts_are_listed_with_base_mine_and_theirs(rio, conflicted):
    body = planner_client(rio).get("/api/organizations/RIO/conflicts").json()
    (conflict,) = body["conflicts"]
    assert (conflict["id"], conflict["pfaId"], conflict["by"]) == (conflicted.pk, KEY, "ann")
    assert conflict["fields"] == {"dor": {"base": conflicted.base_values["dor"], "mine": "MINE", "theirs": "THEIRS"}}


@pytest.mark.parametrize(
    ("resolution", "values", "dor", "rate"),
    [
        ("keep_mine", None, "MINE", "1,234.00"),
        ("take_pems", None, "THEIRS", None),
        ("merge", {"dor": "BOTH", "monthlyRate": "99"}, "BOTH", "99.00"),
        ("merge", {"dor": "BOTH"}, "BOTH", "1,234.00"),  # mine for the fields not given
    ],
)
def test_each_resolution_reaches_pems_as_chosen(rio, simulator, conflicted, resolution, values, dor, rate):
    rate_before = simulator.get_row("RIO", KEY)["pfs_f_rental"]
    client = planner_client(rio, "mirror.edit_pfa_records")
    response = client.post(
        f"/api/modifications/{conflicted.pk}/resolve", {"resolution": resolution, "values": values}, format="json"
    )
    assert response.status_code == 200, response.content
    write(rio)
    row = simulator.get_row("RIO", KEY)
    assert (row["pfs_f_dor"], row["pfs_f_rental"]) == (dor, rate or rate_before)
    conflicted.refresh_from_db()
    assert conflicted.state == (State.DISCARDED if resolution == "take_pems" else State.WRITTEN)
    again = client.post(f"/api/modifications/{conflicted.pk}/resolve", {"resolution": "keep_mine"}, format="json")
    assert again.status_code == 409


def test_a_conflict_on_a_record_gone_from_the_mirror_can_only_take_pems(rio, conflicted):
    PfaMirror.objects.filter(organization=rio, pfa_id=KEY).delete()  # deleted in PEMS, then purged
    client = planner_client(rio, "mirror.edit_pfa_records")
    url = f"/api/modifications/{conflicted.pk}/resolve"
    refused = client.post(url, {"resolution": "keep_mine"}, format="json")
    assert refused.status_code == 400 and "deleted in PEMS" in refused.json()["message"]
    assert client.post(url, {"resolution": "take_pems"}, format="json").status_code == 200
    conflicted.refresh_from_db()
    assert conflicted.state == State.DISCARDED


def test_resolving_needs_the_permission_and_the_organization(rio, conflicted):
    url = f"/api/modifications/{conflicted.pk}/resolve"
    assert planner_client(rio).post(url, {"resolution": "take_pems"}, format="json").status_code == 403
    outsider = planner_client(OrganizationFactory(code="SEA"), "mirror.edit_pfa_records", username="otto")
    assert outsider.post(url, {"resolution": "take_pems"}, format="json").status_code == 404
    bad = planner_client(rio, "mirror.edit_pfa_records", username="ed").post(url, {"resolution": "x"}, format="json")
    assert bad.status_code == 400 and "resolution" in bad.json()["fields"]
    conflicted.refresh_from_db()
    assert conflicted.state == State.CONFLICT


def test_the_admin_resolves_by_action_and_by_merge(rio, simulator, conflicted, admin_client):
    from django.urls import reverse

    merge_url = reverse("admin:mirror_pfamodification_merge", args=[conflicted.pk])
    assert (
        merge_url
        in admin_client.get(reverse("admin:mirror_pfamodification_change", args=[conflicted.pk])).content.decode()
    )
    assert "THEIRS" in admin_client.get(merge_url).content.decode()
    admin_client.post(merge_url, {"dor": "MERGED"})
    conflicted.refresh_from_db()
    assert conflicted.state == State.COMMITTED
    assert conflicted.changes == {"dor": "MERGED", "monthly_rate": "1234.0000"}  # mine where no value was given
    write(rio)
    assert simulator.get_row("RIO", KEY)["pfs_f_dor"] == "MERGED"
    other = commit(rio, User.objects.get(username="ann"), {"dor": "AGAIN"})
    simulator.update_row("RIO", KEY, {"pfs_f_dor": "PEMS-AGAIN"})
    write(rio)
    admin_client.post(
        reverse("admin:mirror_pfamodification_changelist"),
        {"action": "resolve_take_pems", "_selected_action": [other.pk]},
    )
    other.refresh_from_db()
    assert other.state == State.DISCARDED


# --- what PEMS keeps is what is called written ---------------------------------------------------------


def assert_pems_holds_what_is_written(simulator, organization, modification: PfaModification) -> None:
    pems = organization.api_configurations.get().pems_settings(organization)
    record = parse_pfa_row(simulator.get_row("RIO", modification.pfa_id), time_zone=pems.zone, organization_code="RIO")
    modification.refresh_from_db()
    assert modification.state == State.WRITTEN
    written = {name: delta.value_from_json(name, value) for name, value in modification.changes.items()}
    assert written == {name: getattr(record, name) for name in written}


def test_what_pems_holds_after_a_write_equals_what_is_called_written(rio, simulator, ann):
    modification = commit(
        rio,
        ann,
        {"model": "  Liebherr LTM  ", "monthly_rate": "5200.13", "purchase_price": "0.1", "dor": " "},
    )
    assert write(rio).records_written == 1
    assert_pems_holds_what_is_written(simulator, rio, modification)
    assert simulator.get_row("RIO", KEY)["pfs_f_model"] == "Liebherr LTM"


def test_a_change_stored_with_more_places_is_written_as_pems_keeps_it(rio, simulator, ann):
    modification = commit(rio, ann, {"monthly_rate": "5200.13"})
    # Stored before the save rules were checked at the door: 4 places, untrimmed text.
    PfaModification.objects.filter(pk=modification.pk).update(
        changes={"monthly_rate": "5200.1299", "model": " Untrimmed "}
    )
    assert write(rio).records_written == 1
    assert simulator.get_row("RIO", KEY)["pfs_f_rental"] == "5,200.13"
    assert_pems_holds_what_is_written(simulator, rio, modification)
    assert modification.changes == {"monthly_rate": "5200.1300", "model": "Untrimmed"}


def test_a_replayed_patch_whose_answer_was_lost_is_written_not_a_conflict(rio, simulator, ann):
    modification = commit(rio, ann, {"monthly_rate": "4321.01"})
    PfaModification.objects.filter(pk=modification.pk).update(changes={"monthly_rate": "4321.0050"})
    before = int(simulator.get_row("RIO", KEY)["pfs_recordid"])
    # PEMS applies the PATCH and the answer is lost; the client sends it again, on the stale recordid.
    simulator.inject_fault("truncate", target="record")
    sent = patches(simulator)
    run = write(rio)
    assert patches(simulator) == sent + 2  # the lost one, and the replay PEMS refused as stale
    assert (run.records_written, run.records_conflicts, run.records_errored) == (1, 0, 0)
    assert int(simulator.get_row("RIO", KEY)["pfs_recordid"]) == before + 1  # applied once
    assert simulator.get_row("RIO", KEY)["pfs_f_rental"] == "4,321.01"
    assert_pems_holds_what_is_written(simulator, rio, modification)


def test_keep_mine_of_a_conflict_pems_already_holds_patches_nothing(rio, simulator, ann):
    # A conflict recorded before values were compared as PEMS keeps them: mine 4321.0050, theirs 4321.01.
    simulator.update_row("RIO", KEY, {"pfs_f_rental": "4,321.01"})
    run_sync(rio)
    conflict = PfaModification.objects.create(
        organization=rio,
        pfa_id=KEY,
        author=ann,
        state=State.CONFLICT,
        base_version=1,
        changes={"monthly_rate": "4321.0050"},
        base_values={"monthly_rate": "1000.0000"},
    )
    sent = patches(simulator)
    resolved = delta.conflict_resolve(modification=conflict, user=ann, resolution="keep_mine")
    assert resolved.state == State.DISCARDED
    write(rio)
    assert patches(simulator) == sent


def test_pems_value_set_while_another_edit_is_committed_is_written_after_it(rio, simulator, ann, bob):
    simulator.update_row("RIO", KEY, {"pfs_f_rental": "1,000.00"})
    run_sync(rio)
    pems_rate = mirror_row(rio).monthly_rate
    first = commit(rio, ann, {"monthly_rate": "2000"})
    second = commit(rio, bob, {"monthly_rate": str(pems_rate)})  # reverses ann's edit
    run = write(rio)
    assert (run.records_written, run.records_conflicts) == (2, 0)
    assert mirror_row(rio).monthly_rate == pems_rate
    assert simulator.get_row("RIO", KEY)["pfs_f_rental"] == f"{pems_rate:,.2f}"
    for modification in (first, second):
        modification.refresh_from_db()
        assert modification.state == State.WRITTEN


# --- records PEMS omits for a while --------------------------------------------------------------------


def test_an_edit_on_a_record_pems_omits_for_a_while_is_held_and_written_when_it_comes_back(rio, simulator, ann):
    modification = commit(rio, ann, {"dor": "HELD"})
    row = simulator.get_row("RIO", KEY)
    simulator.delete_row("RIO", KEY)
    assert run_sync(rio, sync_type="full").records_deleted == 1
    sent = patches(simulator)
    write(rio)  # held: not tried, not failed
    assert patches(simulator) == sent
    modification.refresh_from_db()
    assert modification.state == State.COMMITTED
    simulator.insert_row("RIO", {alias: value for alias, value in row.items() if alias != "pfs_recordid"})
    run_sync(rio, sync_type="full")
    assert write(rio).records_written == 1
    assert simulator.get_row("RIO", KEY)["pfs_f_dor"] == "HELD"
    modification.refresh_from_db()
    assert modification.state == State.WRITTEN


def test_a_held_edit_fails_with_its_reason_when_its_record_is_purged(rio, simulator, ann):
    modification = commit(rio, ann, {"dor": "HELD"})
    simulator.delete_row("RIO", KEY)
    run_sync(rio, sync_type="full")
    PfaMirror.objects.filter(organization=rio, pfa_id=KEY).update(
        deleted_at=mirror_row(rio).deleted_at - timedelta(days=400)
    )
    assert pfa_deleted_purge(organization=rio, retention_days=30) == 1
    modification.refresh_from_db()
    assert modification.state == State.FAILED and "purged" in modification.error_message
