#!/usr/bin/env python3
"""Compose the CDS Hooks 2.0 request fixtures in fhir_fixtures/requests/ from scenarios.json.

Each scenario names a base Synthea R4 transaction Bundle (base/), overlay resources written by this
project (overlays/) and draft orders (orders/). Overlays and orders may use these placeholders as a
whole JSON string value:

    "{{T0}}", "{{T0-21d}}", "{{T0+2d}}"   -> ISO date (YYYY-MM-DD) relative to the scenario's t0
    "{{patientRef}}"                      -> "Patient/<Patient.id of the base bundle>"

The monitoring service's patient-view requests come from their own table, monitoring_scenarios.json
(no draft orders, no T0: "today" is the date the service is asked on, and the placeholders count
from it), and are written to requests/monitoring/<name>.json; see `build_monitoring_request`.

Usage:
    python fhir_fixtures/build_requests.py           # (re)write requests/<name>.json
    python fhir_fixtures/build_requests.py --check   # exit 1 if a committed request differs

Only the standard library and orjson are used, so the builder runs without the service installed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import pathlib
import re
import sys
import uuid

import orjson

HERE = pathlib.Path(__file__).resolve().parent
SCENARIOS_FILE = HERE / "scenarios.json"
REQUESTS_DIR = HERE / "requests"

HOOKS = ("order-select", "order-sign")
USER_ID = "Practitioner/example"
# Base for the fullUrl of overlay resources, so that relative references such as
# "Condition/ms-relapsing-remitting" resolve inside the prefetch Bundles.
OVERLAY_BASE_URL = "http://fhir.example.org/r4"
HOOK_INSTANCE_NAMESPACE = uuid.uuid5(
    uuid.NAMESPACE_URL, "urn:lemtrada-cds:fhir-fixtures:hookInstance"
)

# Prefetch key -> FHIR resource type collected into a searchset Bundle (plus "patient").
# The same keys as cds_service/services.py prefetch_templates(); the two Observation keys hold what
# an EHR answers for their queries (see SELECTS).
PREFETCH_TYPES = {
    "conditions": "Condition",
    "observations": "Observation",
    "observationsByCode": "Observation",
    "immunizations": "Immunization",
    "medicationStatements": "MedicationStatement",
    "medicationRequests": "MedicationRequest",
    "medicationAdministrations": "MedicationAdministration",
    "allergies": "AllergyIntolerance",
}
PREFETCH_KEYS = ("patient", *PREFETCH_TYPES)

VALUESETS_DIR = HERE.parent / "cds_service" / "terminology" / "valuesets"
OUTSIDE_LABORATORY_EXT = (
    "https://cds-service.example.org/fhir/StructureDefinition/may-be-filed-outside-laboratory"
)


@functools.cache
def outside_laboratory_codes() -> frozenset[tuple[str, str]]:
    """(system, code) of the value-set concepts flagged as possibly filed outside the laboratory:
    the codes of the observationsByCode query."""
    out = set()
    for path in sorted(VALUESETS_DIR.glob("*.json")):
        doc = orjson.loads(path.read_bytes())
        for include in doc.get("compose", {}).get("include", []):
            for concept in include.get("concept", []):
                if any(
                    e.get("url") == OUTSIDE_LABORATORY_EXT and e.get("valueBoolean") is True
                    for e in concept.get("extension", [])
                ):
                    out.add((include["system"], concept["code"]))
    return frozenset(out)


def _codings(res: dict, element: str) -> list[dict]:
    value = res.get(element)
    concepts = value if isinstance(value, list) else [value] if isinstance(value, dict) else []
    return [c for concept in concepts for c in concept.get("coding", [])]


def is_laboratory(res: dict) -> bool:
    """Matches `category=laboratory` (a token search without a system: any system)."""
    return any(c.get("code") == "laboratory" for c in _codings(res, "category"))


def has_outside_laboratory_code(res: dict) -> bool:
    """Matches `code=system|code,...` with the flagged codes."""
    wanted = outside_laboratory_codes()
    return any((c.get("system"), c.get("code")) in wanted for c in _codings(res, "code"))


# Prefetch key -> which resources of its type the EHR's answer holds (absent: all of them).
SELECTS = {"observations": is_laboratory, "observationsByCode": has_outside_laboratory_code}

SCENARIO_FIELDS = {
    "name",
    "description",
    "hook",
    "base",
    "overlays",
    "orders",
    "selections",
    "t0",
    "prefetch_null",
    "prefetch_omit",
    "bundle_without_type",
}
# What the service answers, read by tests/test_scenarios.py: exactly one of the two per scenario.
EXPECTATION_FIELDS = {"expected_cards", "refused_with"}
DATE_PLACEHOLDER = re.compile(r"\{\{T0(?:([+-])(\d+)d)?\}\}")
NAME_RE = re.compile(r"^[a-z][a-z0-9]*(?:_[a-z0-9]+)+$")


class FixtureError(ValueError):
    """A scenario or fixture file is malformed."""


def hook_instance(name: str) -> str:
    """Fixed hookInstance per scenario: uuid5 of its name."""
    return str(uuid.uuid5(HOOK_INSTANCE_NAMESPACE, name))


def _load(rel: str):
    path = HERE / rel
    if not path.is_file():
        raise FixtureError(f"missing fixture file {rel}")
    return orjson.loads(path.read_bytes())


def substitute(node, t0: dt.date, patient_ref: str, where: str):
    """Replace whole-string placeholders; any other '{{' left in a string is an error."""
    if isinstance(node, dict):
        return {k: substitute(v, t0, patient_ref, where) for k, v in node.items()}
    if isinstance(node, list):
        return [substitute(v, t0, patient_ref, where) for v in node]
    if isinstance(node, str) and "{{" in node:
        if node == "{{patientRef}}":
            return patient_ref
        m = DATE_PLACEHOLDER.fullmatch(node)
        if not m:
            raise FixtureError(f"{where}: unknown placeholder {node!r}")
        days = int(m.group(2) or 0) * (-1 if m.group(1) == "-" else 1)
        return (t0 + dt.timedelta(days=days)).isoformat()
    return node


def load_base(rel: str):
    """Return (patient, [(fullUrl, resource), ...]) from a Synthea transaction Bundle."""
    bundle = _load(rel)
    if bundle.get("resourceType") != "Bundle":
        raise FixtureError(f"{rel}: not a Bundle")
    entries = [(e.get("fullUrl"), e["resource"]) for e in bundle.get("entry", [])]
    patients = [r for _, r in entries if r.get("resourceType") == "Patient"]
    if len(patients) != 1:
        raise FixtureError(f"{rel}: expected exactly one Patient, found {len(patients)}")
    return patients[0], entries


def overlay_resources(item: str | dict, t0: dt.date, patient_ref: str, name: str) -> list[dict]:
    """An overlay: a file under overlays/ (a JSON array of resources), or one resource written
    inline in the scenario row (so a new check's scenario is one row, not a row and a file)."""
    if isinstance(item, str):
        return load_resources(item, t0, patient_ref)
    if not isinstance(item, dict) or not item.get("resourceType") or not item.get("id"):
        raise FixtureError(f"{name}: an inline overlay must be a resource with resourceType and id")
    return substitute([item], t0, patient_ref, f"{name} (inline overlay)")


def load_resources(rel: str, t0: dt.date, patient_ref: str) -> list[dict]:
    resources = _load(rel)
    if not isinstance(resources, list):
        raise FixtureError(f"{rel}: must be a JSON array of resources")
    for r in resources:
        if not isinstance(r, dict) or not r.get("resourceType") or not r.get("id"):
            raise FixtureError(f"{rel}: every resource needs resourceType and id")
    return substitute(resources, t0, patient_ref, rel)


def searchset(entries: list[tuple[str, dict]]) -> dict:
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(entries),
        "entry": [{"fullUrl": url, "resource": res} for url, res in entries],
    }


def validate_scenario(s: dict) -> None:
    name = s.get("name", "?")
    unknown = set(s) - SCENARIO_FIELDS - EXPECTATION_FIELDS
    missing = SCENARIO_FIELDS - set(s) - {"selections"}
    if len(EXPECTATION_FIELDS & set(s)) != 1:
        missing |= EXPECTATION_FIELDS - set(s)
    if unknown or missing:
        raise FixtureError(
            f"{name}: unknown fields {sorted(unknown)}, missing fields {sorted(missing)}"
        )
    if not NAME_RE.match(name):
        raise FixtureError(f"{name}: name must be a snake_case sentence")
    if s["hook"] not in HOOKS:
        raise FixtureError(f"{name}: hook must be one of {HOOKS}")
    if (s["hook"] == "order-select") != ("selections" in s):
        raise FixtureError(
            f"{name}: selections are required for order-select and forbidden for order-sign"
        )
    for key in (*s["prefetch_null"], *s["prefetch_omit"]):
        if key not in PREFETCH_KEYS:
            raise FixtureError(f"{name}: unknown prefetch key {key!r}")
    if set(s["prefetch_null"]) & set(s["prefetch_omit"]):
        raise FixtureError(f"{name}: a prefetch key cannot be both null and omitted")
    dt.date.fromisoformat(s["t0"])


def build_request(s: dict) -> dict:
    validate_scenario(s)
    name = s["name"]
    t0 = dt.date.fromisoformat(s["t0"])
    patient, base_entries = load_base(s["base"])
    patient_ref = f"Patient/{patient['id']}"

    by_type: dict[str, list[tuple[str, dict]]] = {rt: [] for rt in PREFETCH_TYPES.values()}
    for url, res in base_entries:
        if res["resourceType"] in by_type:
            by_type[res["resourceType"]].append((url, res))
    seen: set[tuple[str, str]] = {(r["resourceType"], r["id"]) for _, r in base_entries}
    for item in s["overlays"]:
        rel = item if isinstance(item, str) else f"inline {item.get('resourceType')}"
        for res in overlay_resources(item, t0, patient_ref, name):
            if res["resourceType"] == "Patient":
                # A Patient overlay changes the base's Patient (e.g. records a death): its
                # elements replace or add to the base Patient's; the base file is not touched.
                if res["id"] != patient["id"]:
                    raise FixtureError(f"{name}: a Patient overlay must have the base's Patient id")
                patient = {**patient, **res}
                continue
            key = (res["resourceType"], res["id"])
            if key in seen:
                raise FixtureError(f"{name}: duplicate resource {key[0]}/{key[1]} (from {rel})")
            seen.add(key)
            if res["resourceType"] not in by_type:
                raise FixtureError(
                    f"{name}: {rel} holds a {res['resourceType']}, which no prefetch key carries"
                )
            by_type[res["resourceType"]].append((f"{OVERLAY_BASE_URL}/{key[0]}/{key[1]}", res))

    orders: list[dict] = []
    for rel in s["orders"]:
        orders.extend(load_resources(rel, t0, patient_ref))
    order_refs = [f"{r['resourceType']}/{r['id']}" for r in orders]
    if len(order_refs) != len(set(order_refs)):
        raise FixtureError(f"{name}: duplicate draft order ids")
    draft_orders: dict = {"resourceType": "Bundle"}
    if not s["bundle_without_type"]:
        draft_orders["type"] = "collection"
    draft_orders["entry"] = [{"resource": r} for r in orders]

    context: dict = {"userId": USER_ID, "patientId": patient["id"]}
    if s["hook"] == "order-select":
        for sel in s["selections"]:
            if sel not in order_refs:
                raise FixtureError(f"{name}: selection {sel} is not among the draft orders")
        context["selections"] = list(s["selections"])
    context["draftOrders"] = draft_orders

    prefetch: dict = {"patient": patient}
    for key, rt in PREFETCH_TYPES.items():
        select = SELECTS.get(key)
        prefetch[key] = searchset(
            [(url, res) for url, res in by_type[rt] if select is None or select(res)]
        )
    for key in s["prefetch_null"]:
        prefetch[key] = None
    for key in s["prefetch_omit"]:
        del prefetch[key]

    return {
        "hook": s["hook"],
        "hookInstance": hook_instance(name),
        "context": context,
        "prefetch": prefetch,
    }


def render(request: dict) -> bytes:
    """Stable text: sorted keys, 1-space indent, UTF-8, trailing newline."""
    text = json.dumps(request, sort_keys=True, indent=1, ensure_ascii=False)
    return (text + "\n").encode("utf-8")


def load_scenarios() -> list[dict]:
    """The scenarios of scenarios.json, the one table of scenarios."""
    scenarios = list(orjson.loads(SCENARIOS_FILE.read_bytes()))
    names = [s.get("name") for s in scenarios]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise FixtureError(f"duplicate scenario names: {dupes}")
    return scenarios


MONITORING_FILE = HERE / "monitoring_scenarios.json"
MONITORING_DIR = REQUESTS_DIR / "monitoring"
MONITORING_PREFETCH_TYPES = {
    "conditions": "Condition",
    "observations": "Observation",
    "observationsByCode": "Observation",
    "medicationStatements": "MedicationStatement",
    "medicationRequests": "MedicationRequest",
    "medicationAdministrations": "MedicationAdministration",
    "serviceRequests": "ServiceRequest",
    "procedures": "Procedure",
}
"""The monitoring service's prefetch keys (cds_service/services.py MONITORING_PREFETCH_TYPES)."""
MONITORING_FIELDS = {"name", "description", "hook", "service", "base", "overlays", "today"}
MONITORING_OPTIONAL = {
    "prefetch_omit",
    "expected_card_topics",
    "expected_pending",
    "expected_dates",
    "expected_orders",
}
# serviceRequests answer `status=active`.
MONITORING_SELECTS = {**SELECTS, "serviceRequests": lambda res: res.get("status") == "active"}


def validate_monitoring_scenario(s: dict) -> None:
    name = s.get("name", "?")
    unknown = set(s) - MONITORING_FIELDS - MONITORING_OPTIONAL - EXPECTATION_FIELDS
    missing = MONITORING_FIELDS - set(s)
    if len(EXPECTATION_FIELDS & set(s)) != 1:
        missing |= EXPECTATION_FIELDS - set(s)
    if unknown or missing:
        raise FixtureError(
            f"{name}: unknown fields {sorted(unknown)}, missing fields {sorted(missing)}"
        )
    if not NAME_RE.match(name):
        raise FixtureError(f"{name}: name must be a snake_case sentence")
    if s["hook"] != "patient-view" or s["service"] != "lemtrada-monitoring":
        raise FixtureError(f"{name}: the monitoring table is patient-view / lemtrada-monitoring")
    for key in s.get("prefetch_omit", ()):
        if key != "patient" and key not in MONITORING_PREFETCH_TYPES:
            raise FixtureError(f"{name}: unknown prefetch key {key!r}")
    dt.date.fromisoformat(s["today"])


def build_monitoring_request(s: dict) -> dict:
    """A patient-view request: the base Synthea record plus overlays, with the monitoring
    service's prefetch (each key holding what an EHR answers for its query)."""
    validate_monitoring_scenario(s)
    name = s["name"]
    today = dt.date.fromisoformat(s["today"])
    patient, base_entries = load_base(s["base"])
    patient_ref = f"Patient/{patient['id']}"
    by_type: dict[str, list[tuple[str, dict]]] = {
        rt: [] for rt in MONITORING_PREFETCH_TYPES.values()
    }
    for url, res in base_entries:
        if res["resourceType"] in by_type:
            by_type[res["resourceType"]].append((url, res))
    seen: set[tuple[str, str]] = {(r["resourceType"], r["id"]) for _, r in base_entries}
    for item in s["overlays"]:
        for res in overlay_resources(item, today, patient_ref, name):
            if res["resourceType"] == "Patient":
                if res["id"] != patient["id"]:
                    raise FixtureError(f"{name}: a Patient overlay must have the base's Patient id")
                patient = {**patient, **res}
                continue
            key = (res["resourceType"], res["id"])
            if key in seen or res["resourceType"] not in by_type:
                raise FixtureError(f"{name}: duplicate or unexpected resource {key[0]}/{key[1]}")
            seen.add(key)
            by_type[res["resourceType"]].append((f"{OVERLAY_BASE_URL}/{key[0]}/{key[1]}", res))
    prefetch: dict = {"patient": patient}
    for key, rt in MONITORING_PREFETCH_TYPES.items():
        select = MONITORING_SELECTS.get(key)
        prefetch[key] = searchset(
            [(url, res) for url, res in by_type[rt] if select is None or select(res)]
        )
    for key in s.get("prefetch_omit", ()):
        del prefetch[key]
    return {
        "hook": "patient-view",
        "hookInstance": hook_instance(name),
        "context": {"userId": USER_ID, "patientId": patient["id"]},
        "prefetch": prefetch,
    }


def load_monitoring_scenarios() -> list[dict]:
    """The rows of monitoring_scenarios.json (the patient-view table)."""
    scenarios = list(orjson.loads(MONITORING_FILE.read_bytes()))
    names = [s.get("name") for s in scenarios]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise FixtureError(f"duplicate monitoring scenario names: {dupes}")
    return scenarios


def expected_files() -> dict[pathlib.Path, bytes]:
    files = {REQUESTS_DIR / f"{s['name']}.json": render(build_request(s)) for s in load_scenarios()}
    files.update(
        (MONITORING_DIR / f"{s['name']}.json", render(build_monitoring_request(s)))
        for s in load_monitoring_scenarios()
    )
    return files


def check() -> list[str]:
    """Ways the committed requests differ from what the builder produces (empty: up to date)."""
    problems = []
    wanted = expected_files()
    for path, content in wanted.items():
        if not path.is_file():
            problems.append(f"missing: {path.relative_to(HERE)}")
        elif path.read_bytes() != content:
            problems.append(f"differs: {path.relative_to(HERE)}")
    for folder in (REQUESTS_DIR, MONITORING_DIR):
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else ():
            if path not in wanted:
                problems.append(f"stale (no scenario): {path.relative_to(HERE)}")
    return problems


def build() -> list[pathlib.Path]:
    wanted = expected_files()
    MONITORING_DIR.mkdir(parents=True, exist_ok=True)
    for folder in (REQUESTS_DIR, MONITORING_DIR):
        for path in folder.glob("*.json"):
            if path not in wanted:
                path.unlink()
    written = []
    for path, content in wanted.items():
        if not path.is_file() or path.read_bytes() != content:
            path.write_bytes(content)
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if a committed request is out of date"
    )
    args = parser.parse_args(argv)
    if args.check:
        problems = check()
        for p in problems:
            print(p, file=sys.stderr)
        if problems:
            print("run: python fhir_fixtures/build_requests.py", file=sys.stderr)
            return 1
        print(f"{len(load_scenarios()) + len(load_monitoring_scenarios())} requests up to date")
        return 0
    written = build()
    count = len(load_scenarios()) + len(load_monitoring_scenarios())
    print(f"{count} scenarios, {len(written)} request file(s) written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
