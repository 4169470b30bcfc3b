"""Fixtures many test modules share: the built-in head, the tiny corpus, the tiny THUNDER model, and one
torch thread for modules that train or sample (the machine has two cores; tests must not fight over them)."""

import pytest
import torch

from backend.head import load_head


@pytest.fixture(scope="session")
def head():
    return load_head("builtin")


@pytest.fixture(scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_corpus(head, tmp_path_factory):
    """A small corpus written with the corpus format and the articulation model (tests/corpus_fixtures.py)."""
    from corpus_fixtures import write_tiny_corpus

    return write_tiny_corpus(tmp_path_factory.mktemp("corpus"), head)


@pytest.fixture(scope="session")
def tiny_model(head, tmp_path_factory):
    """A tiny no-M2S THUNDER checkpoint trained in seconds (tests/generation_fixtures.py)."""
    from generation_fixtures import train_tiny_model

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train_tiny_model(tmp_path_factory.mktemp("tiny"), head)
    finally:
        torch.set_num_threads(threads)
