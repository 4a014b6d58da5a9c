"""Orders that name their drug by medicationReference (as Epic does): where the Medication is found.

The Medication is looked up in draftOrders, then prefetch, then the order's contained resources,
then read from the request's fhirServer (a real stub on 127.0.0.1). An order whose medication can
be identified nowhere could be the alemtuzumab order, so it is a 412, never a silent "no cards".
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from fhir_stub_server import FhirStub
from fixture_requests import fixture_request

from cds_service.app import create_app

SELECT = "/cds-services/lemtrada-order-select"
TOKEN = "stub-token"
BASE = fixture_request("lemtrada_by_medication_reference")


def order(doc: dict[str, Any]) -> dict[str, Any]:
    return next(
        e["resource"]
        for e in doc["context"]["draftOrders"]["entry"]
        if e["resource"]["resourceType"] == "MedicationRequest"
    )


MEDICATION = next(
    e["resource"]
    for e in BASE["context"]["draftOrders"]["entry"]
    if e["resource"]["resourceType"] == "Medication"
)
REFERENCE = f"Medication/{MEDICATION['id']}"


def without_medication(doc: dict[str, Any], display: str | None = None) -> dict[str, Any]:
    """The request with the Medication taken out of draftOrders (display replaced or removed)."""
    out = copy.deepcopy(doc)
    bundle = out["context"]["draftOrders"]
    bundle["entry"] = [e for e in bundle["entry"] if e["resource"]["resourceType"] != "Medication"]
    ref = order(out)["medicationReference"]
    if display is None:
        ref.pop("display", None)
    else:
        ref["display"] = display
    return out


def in_prefetch(doc: dict[str, Any]) -> dict[str, Any]:
    out = without_medication(doc)
    out["prefetch"]["medicationRequests"].setdefault("entry", []).append(
        {"resource": copy.deepcopy(MEDICATION)}
    )
    return out


def contained(doc: dict[str, Any]) -> dict[str, Any]:
    out = without_medication(doc)
    medication = {**copy.deepcopy(MEDICATION), "id": "med"}
    order(out)["contained"] = [medication]
    order(out)["medicationReference"] = {"reference": "#med"}
    return out


def on_server(absolute: bool = False) -> Callable[[dict[str, Any], str], dict[str, Any]]:
    def build(doc: dict[str, Any], base_url: str) -> dict[str, Any]:
        out = without_medication(doc)
        out["fhirServer"] = base_url
        out["fhirAuthorization"] = {
            "access_token": TOKEN,
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "patient/*.read",
            "subject": "cds-service",
        }
        if absolute:
            order(out)["medicationReference"]["reference"] = f"{base_url}/{REFERENCE}"
        return out

    return build


def malformed_code(doc: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    for entry in out["context"]["draftOrders"]["entry"]:
        if entry["resource"]["resourceType"] == "Medication":
            entry["resource"]["code"]["coding"] = {"code": "1594663"}  # an object, not an array
    return out


def not_selected(doc: dict[str, Any]) -> dict[str, Any]:
    out = without_medication(doc)
    out["context"]["selections"] = ["MedicationRequest/some-other-order"]
    extra = copy.deepcopy(order(out))
    extra["id"] = "some-other-order"
    extra["medicationReference"] = {
        "reference": "Medication/amoxicillin",
        "display": "AMOXICILLIN 500 MG CAPSULE",
    }
    out["context"]["draftOrders"]["entry"].append({"resource": extra})
    return out


@dataclass(frozen=True)
class Expect:
    """The status; for 200, where the summary card says the drug was recognised (empty: no
    cards at all); for errors, a phrase of the OperationOutcome; and whether the stub was asked
    for the Medication."""

    status: int
    recognised: str = ""
    mentions: str = ""
    read_from_server: bool = False


RECOGNISED = re.compile(r"recognised by [^\n]*")


def verdicts(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The cards with the sentence saying how the order was recognised taken out."""
    return [
        {**card, "detail": RECOGNISED.sub("recognised", card["detail"])} for card in body["cards"]
    ]


CASES: list[Any] = [
    pytest.param(
        lambda doc, url: doc,
        Expect(200, "RxNorm 1594663 via medicationReference to Medication in draftOrders"),
        id="the Medication inside draftOrders identifies the order",
    ),
    pytest.param(
        lambda doc, url: in_prefetch(doc),
        Expect(200, "Medication in prefetch"),
        id="the Medication in prefetch identifies the order",
    ),
    pytest.param(
        lambda doc, url: contained(doc),
        Expect(200, "Medication in the order's contained resources"),
        id="a contained Medication identifies the order",
    ),
    pytest.param(
        on_server(),
        Expect(200, "Medication in the FHIR server", read_from_server=True),
        id="a Medication found nowhere in the request is read from the fhirServer",
    ),
    pytest.param(
        on_server(absolute=True),
        Expect(200, "Medication in the FHIR server", read_from_server=True),
        id="an absolute reference to the fhirServer is read the same way",
    ),
    pytest.param(
        lambda doc, url: without_medication(doc),
        Expect(412, mentions="the Medication it references is not in"),
        id="an unidentifiable order without a fhirServer is a 412 naming no reference",
    ),
    pytest.param(
        lambda doc, url: {
            **on_server()(doc, url),
            "fhirServer": "https://fhir.elsewhere.example.org/r4",
        },
        Expect(412, mentions="cannot be identified"),
        id="a fhirServer that is not allow-listed is not asked: 412",
    ),
    pytest.param(
        lambda doc, url: without_medication(doc, "AMOXICILLIN 500 MG CAPSULE"),
        Expect(200),
        id="a display naming another drug is trusted: no cards, no read",
    ),
    pytest.param(
        lambda doc, url: without_medication(doc, "ALEMTUZUMAB 12 MG/1.2 ML IV SOLN"),
        Expect(200, "name in text via medicationReference display"),
        id="a display naming alemtuzumab identifies the order without the Medication",
    ),
    pytest.param(
        lambda doc, url: malformed_code(doc),
        Expect(400, mentions="cannot be read"),
        id="a Medication whose code cannot be read is a 400, not a skipped order",
    ),
    pytest.param(
        lambda doc, url: not_selected(doc),
        Expect(200),
        id="an unidentifiable order outside the selections is not looked at",
    ),
]


def reads_of_medication(stub: FhirStub) -> list[Any]:
    """The stub's Medication reads (it records a request before answering it)."""
    return [r for r in stub.requests if "/Medication/" in r.path]


@pytest.mark.parametrize("build,expect", CASES)
def test_where_the_ordered_medication_is_found(
    stubs: Callable[..., FhirStub], build: Callable[[dict[str, Any], str], Any], expect: Expect
) -> None:
    """Each way of naming the drug gives the cards of the plain request, or a clear error."""
    stub = stubs(in_prefetch(BASE))  # serves the Medication (and the record) by id
    client = create_app(
        testing=True, fhir_server_allowlist=(stub.base_url,), http_allowed_hosts=("127.0.0.1",)
    ).test_client()
    expected = client.post(SELECT, json=BASE).get_json()
    assert expected["cards"], "the unchanged request is an alemtuzumab order"
    response = client.post(SELECT, json=build(BASE, stub.base_url))
    body = response.get_json()
    assert response.status_code == expect.status, body
    if expect.status == 200 and not expect.recognised:
        assert body == {"cards": []}
    elif expect.status == 200:
        assert verdicts(body) == verdicts(expected)
        summary = body["cards"][-1]
        assert summary["source"]["topic"]["code"] == "eligibility-summary"
        assert expect.recognised in summary["detail"]
    else:
        assert body["resourceType"] == "OperationOutcome"
        assert expect.mentions in body["issue"][0]["diagnostics"]
        assert REFERENCE not in body["issue"][0]["diagnostics"], "the sender's value is echoed"
        assert body["issue"][0]["expression"] == ["context.draftOrders"]
    medication_reads = reads_of_medication(stub)
    assert bool(medication_reads) is expect.read_from_server
    if expect.read_from_server:
        assert {r.authorization for r in medication_reads} == {f"Bearer {TOKEN}"}


def test_a_medication_on_the_server_and_missing_prefetch_keys_are_read_in_one_trip(
    stubs: Callable[..., FhirStub],
) -> None:
    """The Medication of an unidentified order and the keys the EHR did not prefetch are read
    from the fhirServer together: one call of the FHIR client per hook call, the same cards."""
    stub = stubs(in_prefetch(BASE))
    app = create_app(
        testing=True, fhir_server_allowlist=(stub.base_url,), http_allowed_hosts=("127.0.0.1",)
    )
    client = app.extensions["cds_fetcher"]
    trips: list[list[str]] = []

    def counting(endpoint: Any, queries: Any, pages: Any = None) -> Any:
        trips.append(sorted(queries))
        return client(endpoint, queries, pages)

    app.extensions["cds_fetcher"] = counting
    expected = app.test_client().post(SELECT, json=BASE).get_json()
    request_json = on_server()(BASE, stub.base_url)
    del request_json["prefetch"]["conditions"], request_json["prefetch"]["immunizations"]
    response = app.test_client().post(SELECT, json=request_json)
    assert response.status_code == 200, response.get_json()
    assert verdicts(response.get_json()) == verdicts(expected)
    assert trips == [["conditions", "immunizations", "medication-0"]]
    assert len(reads_of_medication(stub)) == 1


AMOXICILLIN = {
    "coding": [
        {
            "system": "http://www.nlm.nih.gov/research/umls/rxnorm",
            "code": "308182",
            "display": "amoxicillin 500 MG Oral Capsule",
        }
    ]
}


@pytest.mark.parametrize(
    "code,status",
    [
        pytest.param(
            AMOXICILLIN,
            200,
            id="the Medication read names another drug: no cards, the prefetch not judged",
        ),
        pytest.param(
            None, 400, id="the Medication read is Lemtrada: the bad prefetch value is a 400"
        ),
    ],
)
def test_a_bad_prefetch_value_matters_only_once_the_read_medication_is_alemtuzumab(
    stubs: Callable[..., FhirStub], code: dict[str, Any] | None, status: int
) -> None:
    """An unidentified order read together with the prefetch: its problems wait for the drug."""
    served = in_prefetch(BASE)
    for entry in served["prefetch"]["medicationRequests"]["entry"]:
        if entry["resource"]["resourceType"] == "Medication" and code is not None:
            entry["resource"]["code"] = code
    stub = stubs(served)
    client = create_app(
        testing=True, fhir_server_allowlist=(stub.base_url,), http_allowed_hosts=("127.0.0.1",)
    ).test_client()
    request_json = on_server()(BASE, stub.base_url)
    request_json["prefetch"]["conditions"] = "not a resource"
    response = client.post(SELECT, json=request_json)
    assert response.status_code == status, response.get_json()
    if status == 200:
        assert response.get_json() == {"cards": []}
    else:
        assert response.get_json()["issue"][0]["expression"] == ["prefetch.conditions"]
    assert len(reads_of_medication(stub)) == 1
