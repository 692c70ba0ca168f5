"""Fixtures for the evaluator tests (helpers live in eval_fixtures.py, importable by name)."""

from __future__ import annotations

import pytest
from eval_fixtures import build_tokenizer

from sfclip.tokenizer import Tokenizer


@pytest.fixture(scope="session")
def tok() -> Tokenizer:
    return build_tokenizer()
