"""The embedding and search tests use the session fixtures `explore_run`, `loaded` and `collection` of
tests/conftest.py (one tiny trained checkpoint and collection, shared with tests/app)."""
