"""Fixtures for the data tests (helpers live in data_helpers.py, importable by the test modules)."""

from __future__ import annotations

import pytest
from data_helpers import good_samples, make_tokenizer, write_shard


@pytest.fixture(scope="session")
def tokenizer():
    return make_tokenizer()


@pytest.fixture
def shards(tmp_path):
    """Four clean shards of six samples: returns (brace spec, all keys)."""
    keys = []
    for s in range(4):
        samples = good_samples(s, 6)
        keys += [x["__key__"] for x in samples]
        write_shard(tmp_path / f"{s:05d}.tar", samples)
    return str(tmp_path / "{00000..00003}.tar"), keys
