"""Load tests of ``grace serve`` (load_test.py -> results-server.md)."""
