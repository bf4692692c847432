"""Declarative search spaces and arch configs (plain data; no torch)."""
