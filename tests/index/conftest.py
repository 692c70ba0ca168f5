"""Fixtures for the embedding and search tests: a tiny trained checkpoint, loaded, and a tiny collection."""

from __future__ import annotations

import pytest
from explore_fixtures import train_checkpoint, write_collection

import sfclip


@pytest.fixture(scope="session")
def explore_run(tmp_path_factory, tiny_vision_teacher_dir, tiny_text_teacher_dir, shard_writer, recipe_writer):
    return train_checkpoint(tmp_path_factory.mktemp("explore_run"), tiny_vision_teacher_dir, tiny_text_teacher_dir,
                            shard_writer, recipe_writer)


@pytest.fixture(scope="session")
def loaded(explore_run):
    """(model, tokenizer, transform) from `sfclip.load`."""
    return sfclip.load(explore_run)


@pytest.fixture(scope="session")
def collection(tmp_path_factory):
    return write_collection(tmp_path_factory.mktemp("collection"))
