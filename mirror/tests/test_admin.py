"""Admin for PEMS connections (write-only secret, Test connection) and the read-only mirror browser."""

import pytest
from django.contrib.auth.models import Permission, User
from django.contrib.messages import get_messages
from django.db import connection as db_connection
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from mirror.models import ApiConfiguration, PfaMirror
from mirror.tests.factories import ApiConfigurationFactory, OrganizationFactory, PfaMirrorFactory

pytestmark = pytest.mark.django_db

SECRET = "s3cret-Value-123"


def assert_no_secret(response, configuration: ApiConfiguration) -> None:
    body = response.content.decode()
    assert SECRET not in body
    assert configuration.secret and configuration.secret not in body


def message_texts(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


@pytest.fixture
def connection(pems_server) -> ApiConfiguration:
    """RIO's read connection to the simulator; the simulator accepts SECRET as its password."""
    pems_server.simulator.users["pfasync"] = SECRET
    return ApiConfigurationFactory(
        organization=OrganizationFactory(code="RIO"),
        base_url=pems_server.url,
        password=SECRET,
    )


def mirror_row(organization, pfa_id: str, **fields) -> PfaMirror:
    data = {"pfs_id": pfa_id, "pfs_a_org": organization.code, "pfs_notes": "raw value"}
    return PfaMirrorFactory(organization=organization, pfa_id=pfa_id, data=data, **fields)


# --- PEMS connections ---------------------------------------------------------------------------


def test_connection_list_shows_settings_but_never_the_secret(admin_client, connection):
    response = admin_client.get(reverse("admin:mirror_apiconfiguration_changelist"))
    assert response.status_code == 200
    assert connection.tenant in response.content.decode()
    assert_no_secret(response, connection)


def test_connection_change_form_has_an_empty_write_only_secret_field(admin_client, connection):
    response = admin_client.get(reverse("admin:mirror_apiconfiguration_change", args=[connection.pk]))
    assert response.status_code == 200
    body = response.content.decode()
    assert 'name="secret"' in body and 'type="password"' in body
    assert "Sync tracking" in body and "last_sync_record_count" not in response.context["adminform"].form.fields
    assert_no_secret(response, connection)


def change_form_data(connection: ApiConfiguration, **overrides) -> dict:
    data = {
        "organization": connection.organization_id,
        "usage": connection.usage,
        "base_url": connection.base_url,
        "endpoint": connection.endpoint,
        "tenant": connection.tenant,
        "pems_organization_code": "",
        "auth_type": connection.auth_type,
        "username": connection.username,
        "secret": "",
        "grid_name": connection.grid_name,
        "grid_id": connection.grid_id,
        "page_size": connection.page_size,
        "request_timeout": connection.request_timeout,
        "time_zone": connection.time_zone,
    }
    return {**data, **overrides}


def test_saving_with_a_blank_secret_keeps_the_stored_one(admin_client, connection):
    url = reverse("admin:mirror_apiconfiguration_change", args=[connection.pk])
    response = admin_client.post(url, change_form_data(connection, page_size=1234))
    assert response.status_code == 302
    connection.refresh_from_db()
    assert connection.page_size == 1234
    assert connection.get_secret() == SECRET


def test_saving_a_new_secret_replaces_the_stored_one(admin_client, connection):
    url = reverse("admin:mirror_apiconfiguration_change", args=[connection.pk])
    response = admin_client.post(url, change_form_data(connection, tenant="OTHER", secret="another-Secret-456"))
    assert response.status_code == 302
    connection.refresh_from_db()
    assert connection.tenant == "OTHER"
    assert connection.get_secret() == "another-Secret-456"


def test_adding_a_connection_requires_a_secret_and_never_echoes_it(admin_client):
    organization = OrganizationFactory(code="NEW")
    url = reverse("admin:mirror_apiconfiguration_add")
    data = change_form_data(ApiConfiguration(organization=organization, base_url="http://pems.test", tenant="T"))
    data["username"] = "someone"
    response = admin_client.post(url, data)
    assert response.status_code == 200
    assert "needs its password or API key" in response.content.decode()

    data["secret"] = SECRET
    data["time_zone"] = "Invalid/Zone"  # a form error re-renders the page: the secret must not come back
    response = admin_client.post(url, data)
    assert response.status_code == 200 and SECRET not in response.content.decode()

    data["time_zone"] = "UTC"
    assert admin_client.post(url, data).status_code == 302
    assert ApiConfiguration.objects.get(organization=organization).get_secret() == SECRET


def run_test_connection(admin_client, *configurations):
    return admin_client.post(
        reverse("admin:mirror_apiconfiguration_changelist"),
        {
            "action": "test_connection",
            "_selected_action": [str(c.pk) for c in configurations],
        },
        follow=True,
    )


def test_test_connection_reports_the_count_and_latency(admin_client, connection):
    response = run_test_connection(admin_client, connection)
    (text,) = message_texts(response)
    assert "250 records for organization RIO" in text and " ms" in text
    assert_no_secret(response, connection)


def test_test_connection_of_a_default_connection_uses_an_organization_reading_through_it(admin_client, pems_server):
    ApiConfigurationFactory(organization=OrganizationFactory(code="RIO"), base_url=pems_server.url)
    OrganizationFactory(code="HOU")  # no connection of its own: reads through the default
    default = ApiConfigurationFactory(organization=None, base_url=pems_server.url)
    response = run_test_connection(admin_client, default)
    assert "80 records for organization HOU" in message_texts(response)[0]


def test_test_connection_of_a_default_connection_nobody_uses_says_so(admin_client, pems_server):
    ApiConfigurationFactory(organization=OrganizationFactory(code="RIO"), base_url=pems_server.url)
    default = ApiConfigurationFactory(organization=None, base_url=pems_server.url)
    (text,) = message_texts(run_test_connection(admin_client, default))
    assert "No active organization uses this default connection" in text


def test_adding_a_connection_asks_for_the_time_zone_with_nothing_filled_in(admin_client):
    organization = OrganizationFactory(code="NEW")
    url = reverse("admin:mirror_apiconfiguration_add")
    form = admin_client.get(url).context["adminform"].form
    assert form.fields["time_zone"].required and not form["time_zone"].value()

    data = change_form_data(ApiConfiguration(organization=organization, base_url="http://pems.test", tenant="T"))
    response = admin_client.post(url, {**data, "username": "someone", "secret": SECRET, "time_zone": ""})
    assert response.status_code == 200
    assert list(response.context["adminform"].form.errors) == ["time_zone"]
    assert not ApiConfiguration.objects.exists()


def test_a_default_connection_naming_a_pems_organization_is_a_field_error(admin_client):
    data = change_form_data(ApiConfiguration(base_url="http://pems.test", tenant="T", time_zone="America/Chicago"))
    data = {**data, "organization": "", "username": "someone", "secret": SECRET, "pems_organization_code": "HOU"}
    response = admin_client.post(reverse("admin:mirror_apiconfiguration_add"), data)
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert list(errors) == ["pems_organization_code"]
    assert "global default connection" in errors["pems_organization_code"][0]
    assert errors["pems_organization_code"][0] in response.content.decode()
    assert not ApiConfiguration.objects.exists()

    data["pems_organization_code"] = ""
    assert admin_client.post(reverse("admin:mirror_apiconfiguration_add"), data).status_code == 302
    assert ApiConfiguration.objects.get(organization=None).pems_organization_code == ""


def test_test_connection_reports_the_pems_error_in_plain_words(admin_client, pems_server):
    pems_server.simulator.users["pfasync"] = "the-real-password"
    connection = ApiConfigurationFactory(
        organization=OrganizationFactory(code="RIO"),
        base_url=pems_server.url,
        password=SECRET,
    )
    response = run_test_connection(admin_client, connection)
    (text,) = message_texts(response)
    assert "Authentication failed: invalid user name, password or API key." in text
    assert SECRET not in text and connection.secret not in text
    assert_no_secret(response, connection)


def test_test_connection_of_an_unreachable_pems_says_so(admin_client):
    connection = ApiConfigurationFactory(organization=OrganizationFactory(code="RIO"), base_url="http://127.0.0.1:1")
    (text,) = message_texts(run_test_connection(admin_client, connection))
    assert text.startswith(str(connection))
    assert "PEMS" in text


def staff_with(*codenames: str) -> Client:
    user = User.objects.create_user("staffer", password="pw", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="mirror", codename__in=codenames))
    client = Client()
    client.force_login(user)
    return client


def test_view_only_staff_see_a_connection_but_cannot_change_or_test_it(connection):
    client = staff_with("view_apiconfiguration")
    url = reverse("admin:mirror_apiconfiguration_change", args=[connection.pk])
    page = client.get(url)
    assert page.status_code == 200 and connection.tenant in page.content.decode()
    assert 'name="secret"' not in page.content.decode()
    assert_no_secret(page, connection)  # nor its encrypted token, as a read-only field would show it
    changelist = client.get(reverse("admin:mirror_apiconfiguration_changelist"))
    assert changelist.context["action_form"] is None  # no action offered
    assert client.post(url, change_form_data(connection, page_size=1234, secret=SECRET)).status_code == 403
    response = run_test_connection(client, connection)
    assert not any("records for organization" in text for text in message_texts(response))
    connection.refresh_from_db()
    assert connection.page_size != 1234


def test_test_connection_needs_the_change_permission(connection):
    client = staff_with("view_apiconfiguration", "change_apiconfiguration")
    (text,) = message_texts(run_test_connection(client, connection))
    assert "250 records for organization RIO" in text


# --- mirrored PFA records -----------------------------------------------------------------------


@pytest.fixture
def records():
    rio, hou = OrganizationFactory(code="RIO"), OrganizationFactory(code="HOU")
    return [
        mirror_row(rio, "PFA-1", category="CRANES", source="RENTAL", dor="BEO"),
        mirror_row(rio, "PFA-2", category="TRUCKS", source="OWNED", dor="PROJECT"),
        mirror_row(hou, "PFA-3", category="CRANES", source="OWNED", dor="BEO"),
    ]


@pytest.fixture
def deleted_record(records):
    return mirror_row(records[0].organization, "PFA-GONE", category="CRANES", deleted_at=timezone.now())


def changelist(admin_client, **params):
    response = admin_client.get(reverse("admin:mirror_pfamirror_changelist"), params)
    assert response.status_code == 200
    return response, {record.pfa_id for record in response.context["cl"].result_list}


def test_mirror_list_shows_records(admin_client, records):
    response, shown = changelist(admin_client)
    assert shown == {"PFA-1", "PFA-2", "PFA-3"}
    assert response.context["cl"].show_full_result_count is False


def test_mirror_list_hides_records_deleted_in_pems_unless_asked(admin_client, deleted_record):
    response, shown = changelist(admin_client)
    assert shown == {"PFA-1", "PFA-2", "PFA-3"}
    deleted_filter = next(
        f for f in response.context["cl"].filter_specs if getattr(f, "parameter_name", "") == "deleted"
    )
    choices = list(deleted_filter.choices(response.context["cl"]))
    assert [(c["display"], c["selected"]) for c in choices] == [("No", True), ("Yes", False), ("All", False)]
    assert changelist(admin_client, deleted="yes")[1] == {"PFA-GONE"}
    assert changelist(admin_client, deleted="all")[1] == {"PFA-1", "PFA-2", "PFA-3", "PFA-GONE"}
    assert changelist(admin_client, q="PFA-GONE")[1] == set()
    assert changelist(admin_client, deleted="yes", category="CRANES")[1] == {"PFA-GONE"}


def test_mirror_list_and_detail_show_when_a_record_was_deleted_in_pems(admin_client, deleted_record):
    response, _ = changelist(admin_client, deleted="yes")
    assert "deleted_at" in response.context["cl"].list_display
    response = admin_client.get(reverse("admin:mirror_pfamirror_change", args=[deleted_record.pk]))
    assert response.status_code == 200
    assert "Deleted at" in response.content.decode()


def test_mirror_search_by_pfa_id(admin_client, records):
    assert changelist(admin_client, q="PFA-2")[1] == {"PFA-2"}


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"category": "CRANES"}, {"PFA-1", "PFA-3"}),
        ({"source": "OWNED"}, {"PFA-2", "PFA-3"}),
        ({"dor": "PROJECT"}, {"PFA-2"}),
        ({"dor": "BEO", "source": "OWNED"}, {"PFA-3"}),
    ],
)
def test_mirror_filters(admin_client, records, params, expected):
    assert changelist(admin_client, **params)[1] == expected


def test_mirror_organization_filter_narrows_the_offered_values(admin_client, records):
    organization = records[2].organization
    response, shown = changelist(admin_client, organization__id__exact=str(organization.pk))
    assert shown == {"PFA-3"}
    category_filter = next(
        f for f in response.context["cl"].filter_specs if getattr(f, "parameter_name", "") == "category"
    )
    assert [value for value, _ in category_filter.lookup_choices] == ["CRANES"]


def test_mirror_filter_choices_come_from_a_bounded_sample(admin_client):
    # More rows than the sample (5 000) reads: a value only in the rows past it is not offered, and
    # still filters when asked for by URL. A fresh table is read in the order it was written.
    rio = OrganizationFactory(code="RIO")
    common = PfaMirrorFactory.build_batch(5_000, organization=rio, category="CRANES")
    PfaMirror.objects.bulk_create(
        [*common, PfaMirrorFactory.build(organization=rio, pfa_id="PFA-RARE", category="RARE")]
    )

    def offered(response):
        category_filter = next(
            f for f in response.context["cl"].filter_specs if getattr(f, "parameter_name", "") == "category"
        )
        return [value for value, _ in category_filter.lookup_choices]

    assert offered(changelist(admin_client)[0]) == ["CRANES"]
    response, shown = changelist(admin_client, category="RARE")
    assert (offered(response), shown) == (["CRANES", "RARE"], {"PFA-RARE"})


def test_mirror_detail_pretty_prints_the_raw_row_and_is_read_only(admin_client, records):
    record = records[0]
    response = admin_client.get(reverse("admin:mirror_pfamirror_change", args=[record.pk]))
    body = response.content.decode()
    assert response.status_code == 200
    assert "<pre>{\n  &quot;pfs_a_org&quot;: &quot;RIO&quot;," in body
    assert 'name="_save"' not in body
    assert admin_client.get(reverse("admin:mirror_pfamirror_add")).status_code == 403
    response = admin_client.post(reverse("admin:mirror_pfamirror_delete", args=[record.pk]), {"post": "yes"})
    assert response.status_code == 403
    assert PfaMirror.objects.filter(pk=record.pk).exists()


def planner_estimate_set(rows: int) -> None:
    """Sets the planner's row estimate of the records table, as ANALYZE of a table that size would
    (superuser only; the test's transaction undoes it)."""
    with db_connection.cursor() as cursor:
        cursor.execute("UPDATE pg_class SET reltuples = %s WHERE oid = 'pfa_mirror'::regclass", [rows])


def test_unfiltered_mirror_list_counts_from_the_planner_estimate(admin_client, records):
    planner_estimate_set(1_234_567)
    response, _ = changelist(admin_client)
    assert response.context["cl"].paginator.count == 1_234_567
    assert "1234567" in response.content.decode()
    # A filtered list is counted exactly.
    response, _ = changelist(admin_client, category="CRANES")
    assert response.context["cl"].result_count == 2


def test_default_mirror_list_of_live_records_is_estimated_less_the_deleted_ones(admin_client, deleted_record):
    planner_estimate_set(1_234_567)
    response, _ = changelist(admin_client)
    assert response.context["cl"].paginator.count == 1_234_566
    response, _ = changelist(admin_client, deleted="all")
    assert response.context["cl"].paginator.count == 1_234_567
    response, _ = changelist(admin_client, deleted="yes")
    assert response.context["cl"].paginator.count == 1


@pytest.mark.parametrize("estimate", [99_999, -1])  # a small table; a table never analyzed
def test_mirror_list_of_a_small_or_unsized_table_is_counted_exactly(admin_client, records, estimate):
    planner_estimate_set(estimate)
    response, _ = changelist(admin_client)
    assert response.context["cl"].paginator.count == 3


# --- what the model asks of a connection, shown on the form -----------------------------------------


def test_changing_where_the_secret_goes_asks_for_it_again_on_the_secret_field(admin_client, connection):
    url = reverse("admin:mirror_apiconfiguration_change", args=[connection.pk])
    response = admin_client.post(url, change_form_data(connection, base_url="https://elsewhere.example.net"))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert list(errors) == ["secret"] and "base URL" in errors["secret"][0]
    connection.refresh_from_db()
    assert connection.base_url != "https://elsewhere.example.net"


def test_a_secret_with_a_trailing_newline_is_a_field_error_that_does_not_echo_it(admin_client, connection):
    url = reverse("admin:mirror_apiconfiguration_change", args=[connection.pk])
    response = admin_client.post(url, change_form_data(connection, secret="another-Secret-456\n"))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert list(errors) == ["secret"] and "whitespace" in errors["secret"][0]
    assert "another-Secret-456" not in response.content.decode()
    connection.refresh_from_db()
    assert connection.get_secret() == SECRET


def test_an_http_base_url_is_a_field_error_unless_allowed(admin_client, connection, settings):
    settings.PEMS_ALLOW_HTTP = False
    url = reverse("admin:mirror_apiconfiguration_change", args=[connection.pk])
    response = admin_client.post(url, change_form_data(connection, base_url="http://pems.test", secret=SECRET))
    assert response.status_code == 200
    assert list(response.context["adminform"].form.errors) == ["base_url"]


def test_modifications_are_listed_filtered_and_read_only(admin_client):
    from django.contrib.auth.models import User

    from mirror.models import Organization, PfaModification

    rio = Organization.objects.create(code="RIO", name="Rio")
    ann = User.objects.create_user("ann")
    written = PfaModification.objects.create(
        organization=rio, pfa_id="P1", author=ann, state="written", base_version=1, changes={"dor": "BEO"}
    )
    PfaModification.objects.create(organization=rio, pfa_id="P2", author=ann, state="conflict", base_version=1)
    changelist = reverse("admin:mirror_pfamodification_changelist")
    body = admin_client.get(changelist, {"state": "conflict"}).content.decode()
    assert ">P2<" in body and ">P1<" not in body
    page = admin_client.get(reverse("admin:mirror_pfamodification_change", args=[written.pk]))
    assert page.status_code == 200 and 'name="state"' not in page.content.decode()
    assert admin_client.post(reverse("admin:mirror_pfamodification_delete", args=[written.pk])).status_code == 403


def test_modifications_name_fields_by_their_verbose_names(admin_client):
    from django.contrib.auth.models import User

    from mirror import delta
    from mirror.models import Organization, PfaModification

    rio = Organization.objects.create(code="RIO", name="Rio")
    mirror_row(rio, "P1", monthly_rate=1000)
    modification = PfaModification.objects.create(
        organization=rio,
        pfa_id="P1",
        author=User.objects.create_user("ann"),
        state="writing",
        base_version=1,
        changes={"monthly_rate": "1200.0000", "forecast_start_date": "2027-02-01"},
    )
    delta.modification_conflicted(
        modification, fields={"monthly_rate": {"base": "1000.0000", "mine": "1200.0000", "theirs": "1300.0000"}}
    )
    body = admin_client.get(reverse("admin:mirror_pfamodification_changelist")).content.decode()
    assert "forecast start date, monthly rate" in body and "monthly_rate" not in body
    page = admin_client.get(reverse("admin:mirror_pfamodification_change", args=[modification.pk])).content.decode()
    assert "PEMS changed monthly rate to &#x27;1300.0000&#x27;" in page
    merge = admin_client.get(reverse("admin:mirror_pfamodification_merge", args=[modification.pk])).content.decode()
    assert ">Monthly rate</label>" in merge and 'name="monthly_rate"' in merge
