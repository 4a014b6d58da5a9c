#!/usr/bin/env python3
"""List, per real-data patient, the facts each check looks at: the reading aid behind
tests/data/real_patients_expected.tsv (written by reading these lists, not the service's output).

    .venv/bin/python tests/real_patient_facts.py [KEY-SUBSTRING]

Per patient (tests/real_patients.py: key, T0): gender, birth date and age at T0, deceased; every
Condition with clinical/verification status, onset/recorded date, abatement and codes; every
Observation that is a laboratory result, newest first, with code, value and date (vitals and
surveys left out; counted); every Immunization (CVX, date, status); every medication (RxNorm code,
status, date); allergies. It reads the raw JSON only: no value set or rule of the service.
"""

from __future__ import annotations

import sys
from datetime import date
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from real_patients import RealPatient, patients


def _codes(concept: Any) -> str:
    if not isinstance(concept, dict):
        return "?"
    codings = concept.get("coding") or []
    parts = [
        f"{c.get('system', '?').rsplit('/', 1)[-1]}|{c.get('code')} {c.get('display', '')}"
        for c in codings
    ]
    return "; ".join(parts) or f"text {concept.get('text')!r}"


def _status(concept: Any) -> str:
    if not isinstance(concept, dict):
        return "-"
    return ",".join(str(c.get("code")) for c in concept.get("coding") or []) or "-"


def _value(obs: dict[str, Any]) -> str:
    if "valueQuantity" in obs:
        q = obs["valueQuantity"]
        return f"{q.get('value')} {q.get('unit') or q.get('code') or ''}".strip()
    if "valueCodeableConcept" in obs:
        return _codes(obs["valueCodeableConcept"])
    for key in ("valueString", "valueBoolean", "valueInteger"):
        if key in obs:
            return f"{obs[key]!r}"
    if obs.get("component"):
        return f"{len(obs['component'])} components"
    return "no value"


def _age(birth: str | None, t0: date) -> str:
    if not birth:
        return "?"
    b = date.fromisoformat(birth[:10])
    return str(t0.year - b.year - ((t0.month, t0.day) < (b.month, b.day)))


def _current(condition: dict[str, Any]) -> bool:
    """Not resolved/inactive/remission and not abated; a missing clinical status counts."""
    status = _status(condition.get("clinicalStatus"))
    ended = status in ("resolved", "inactive", "remission") or "abatementDateTime" in condition
    return not ended and _status(condition.get("verificationStatus")) != "refuted"


def _is_lab(obs: dict[str, Any]) -> bool:
    return any(
        c.get("code") == "laboratory"
        for cat in obs.get("category") or []
        for c in cat.get("coding") or []
    )


def facts(p: RealPatient) -> list[str]:
    pat = p.patient
    sex = [
        e["valueCoding"].get("display")
        for e in pat.get("extension") or []
        if e.get("url", "").endswith("us-core-individual-sex") and "valueCoding" in e
    ]
    gender = f"{pat.get('gender')}" + (f" (individual-sex {sex[0]})" if sex else "")
    lines = [
        f"=== {p.key}  T0 {p.t0}  {gender} born {pat.get('birthDate')} "
        f"(age {_age(pat.get('birthDate'), p.t0)} at T0)  deceased "
        f"{pat.get('deceasedDateTime') or pat.get('deceasedBoolean') or 'no'}"
    ]
    by_type: dict[str, list[dict[str, Any]]] = {}
    for r in p.resources:
        by_type.setdefault(r["resourceType"], []).append(r)
    conditions = by_type.get("Condition", [])
    current = [c for c in conditions if _current(c)]
    lines.append(
        f"  Current Conditions ({len(current)} of {len(conditions)}; resolved or abated left out):"
    )
    for c in sorted(current, key=lambda r: r.get("onsetDateTime") or ""):
        lines.append(
            f"    [{_status(c.get('clinicalStatus'))}/{_status(c.get('verificationStatus'))}] "
            f"onset {str(c.get('onsetDateTime') or c.get('onsetPeriod') or '-')[:10]} "
            f"rec {str(c.get('recordedDate') or '-')[:10]} "
            f"abated {str(c.get('abatementDateTime') or '-')[:10]}  {_codes(c.get('code'))}"
        )
    observations = by_type.get("Observation", [])
    labs = [o for o in observations if _is_lab(o)]
    lines.append(f"  Lab Observations ({len(labs)} of {len(observations)}); within 90 days of T0:")
    newest: dict[str, str] = {}
    for o in sorted(labs, key=lambda r: r.get("effectiveDateTime") or "", reverse=True):
        when = str(o.get("effectiveDateTime") or "-")[:10]
        newest.setdefault(_codes(o.get("code")), when)
        if when == "-" or (p.t0 - date.fromisoformat(when)).days > 90:
            continue
        rng = o.get("referenceRange") or []
        lines.append(
            f"    {when} {o.get('status')} {_codes(o.get('code'))} = {_value(o)}"
            + (
                f" range {rng[0].get('low', {}).get('value')}-{rng[0].get('high', {}).get('value')}"
                if rng
                else ""
            )
            + (f" interp {_codes(o['interpretation'][0])}" if o.get("interpretation") else "")
        )
    lines.append("  Lab codes ever (newest date):")
    lines.extend(f"    {when} {code}" for code, when in sorted(newest.items()))
    others = [o for o in observations if not _is_lab(o)]
    for o in others:
        if "pregnan" in _codes(o.get("code")).lower():
            lines.append(
                f"    (not lab) {o.get('effectiveDateTime')} {_codes(o.get('code'))} = {_value(o)}"
            )
    lines.append("  Immunizations (per vaccine: doses, newest date, status):")
    doses: dict[str, list[str]] = {}
    for i in by_type.get("Immunization", []):
        when = str(i.get("occurrenceDateTime") or i.get("occurrenceString"))[:10]
        doses.setdefault(f"{_codes(i.get('vaccineCode'))} [{i.get('status')}]", []).append(when)
    for name, dates in sorted(doses.items(), key=lambda kv: max(kv[1]), reverse=True):
        lines.append(f"    {len(dates)}x newest {max(dates)}  {name}")
    lines.append("  Medications (not stopped/completed/cancelled):")
    meds = [*by_type.get("MedicationRequest", []), *by_type.get("MedicationStatement", [])]
    seen: set[tuple[str, str]] = set()
    for m in sorted(meds, key=lambda r: r.get("authoredOn") or "", reverse=True):
        if m.get("status") in ("stopped", "completed", "cancelled", "entered-in-error"):
            continue
        name = (
            _codes(m.get("medicationCodeableConcept"))
            if "medicationCodeableConcept" in m
            else str(m.get("medicationReference"))
        )
        key = (name, str(m.get("status")))
        if key in seen:
            continue
        seen.add(key)
        lines.append(f"    newest {str(m.get('authoredOn'))[:10]} {m.get('status')} {name}")
    lines.append("  Allergies:")
    for a in by_type.get("AllergyIntolerance", []):
        lines.append(f"    [{_status(a.get('clinicalStatus'))}] {_codes(a.get('code'))}")
    return lines


def main(argv: list[str]) -> int:
    wanted = argv[1] if len(argv) > 1 else ""
    for p in patients():
        if wanted in p.key:
            print("\n".join(facts(p)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
