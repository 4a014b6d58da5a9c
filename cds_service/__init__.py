"""cds_service: a CDS Hooks 2.0 service for alemtuzumab (Lemtrada) order eligibility."""

__version__ = "0.1.0"
