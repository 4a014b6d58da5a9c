"""Where one prefetch key's data came from: one vocabulary for prefetch, the FHIR client, the
JSON log (`dataOrigin`) and the metrics (`cds_prefetch_keys_total{origin}`).

It sits in the bottom layer so the FHIR access layer and the observability module share it
without importing each other, and nobody parses an origin back out of a free string.
"""

from __future__ import annotations

from enum import Enum


class Origin(Enum):
    """The value is what the log line's `dataOrigin` shows for the key."""

    PREFETCH = "prefetch"
    PREFETCH_NULL = "prefetch (null: no data)"
    PREFETCH_UNDECLARED = "prefetch (undeclared key)"
    FHIR_SERVER = "fhirServer"
    FHIR_SERVER_PAGED = "prefetch + fhirServer pages"
    """A prefetched first page completed by following its `next` links on the FHIR server."""
    FHIR_SERVER_OTHER_ORIGIN = "fhirServer (prefetch paginated on another origin)"
    """A prefetched first page whose `next` link is not on fhirServer: the whole query read."""

    @property
    def label(self) -> str:
        """The `origin` label of cds_prefetch_keys_total."""
        return _LABELS[self]


_LABELS = {
    Origin.PREFETCH: "prefetch",
    Origin.PREFETCH_NULL: "prefetch-null",
    Origin.PREFETCH_UNDECLARED: "prefetch",
    Origin.FHIR_SERVER: "fhir-server",
    Origin.FHIR_SERVER_PAGED: "fhir-server-paged",
    Origin.FHIR_SERVER_OTHER_ORIGIN: "fhir-server",
}
ORIGIN_LABELS = tuple(dict.fromkeys(_LABELS.values()))
"""Every label value, in a stable order (created at zero at start-up)."""
