"""FHIR access: the R4B model shim and prefetch resolution."""
