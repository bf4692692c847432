"""Declarative search spaces and arch configs (plain data; no torch)."""
from search_spaces.space import SearchSpace, SpaceError, arch_hash, read_arch, write_arch

__all__ = ["SearchSpace", "SpaceError", "arch_hash", "read_arch", "write_arch"]
