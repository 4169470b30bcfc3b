"""Fixtures many test modules share: the built-in head, the tiny corpus, the tiny THUNDER model, and one
torch thread for modules that train or sample (the machine has two cores; tests must not fight over them)."""

import os

import pytest
import torch
from hypothesis import settings

# Hypothesis profiles (tests/test_properties.py): `ci` (the default) draws the same examples on every run, so
# a failure in CI reproduces; `dev` draws new ones each run; `thorough` runs ten times as many examples.
settings.register_profile("ci", derandomize=True, print_blob=True, deadline=None)
settings.register_profile("dev", deadline=None)
settings.register_profile("thorough", derandomize=False, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

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


@pytest.fixture(scope="session")
def flame_layout_files(tmp_path_factory):
    """The retarget's test heads (training/retarget_heads.py) as the FLAME site's files: the first as FLAME 2020's
    chumpy pickle, the second as FLAME 2023 Open's plain-array pickle. {name: (path, truth)}."""
    from flame_fixtures import write_flame_pickle
    from training.retarget_heads import TEST_HEADS, make_test_head

    folder = tmp_path_factory.mktemp("flame_layout")
    files = {}
    for (name, file_name, chumpy) in zip(TEST_HEADS, ("generic_model.pkl", "flame2023_Open.pkl"), (True, False)):
        model, truth = make_test_head(name)
        files[name] = (write_flame_pickle(folder / file_name, model,
                                          chumpy=chumpy), truth)
    return files


# Blender tests (tests/blender_harness.py): the extension zip, built once, and which Blenders are tested.
@pytest.fixture(scope="session")
def extension_zip(tmp_path_factory):
    """The installable extension zip, built once per session by scripts/build_extension.py."""
    from blender_harness import build_extension_zip

    return build_extension_zip(tmp_path_factory.mktemp("extension"))


def pytest_report_header(config):
    from blender_harness import report_lines

    return report_lines()


def pytest_terminal_summary(terminalreporter):
    """Which Blenders the Blender cases ran on; shown with -q too, unlike the header."""
    from blender_harness import summary_lines

    lines = summary_lines()
    if lines:
        terminalreporter.write_sep("-", "Blender versions the cases ran on")
        for line in lines:
            terminalreporter.write_line(line)
