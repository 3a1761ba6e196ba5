"""Test harness: real PostgreSQL/Redis topologies (see topology.py)."""
