"""The pure domain: record view, rules, findings. No HTTP, no I/O beyond package data, no clock."""
