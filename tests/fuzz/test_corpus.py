"""Replay every fuzz target's corpus: the seeds, and every crash the fuzzers ever found.

A crash input saved by ``make fuzz`` goes into ``tests/fuzz/corpus/<target>/`` and is checked
here in every test run, with the target's own assertions.
"""

from __future__ import annotations

import importlib

import pytest

from tests.fuzz.run import CORPUS, TARGETS, seeds


@pytest.mark.parametrize("target", TARGETS)
def test_corpus_replays_clean(target: str) -> None:
    check = importlib.import_module(f"tests.fuzz.fuzz_{target}").check
    corpus = seeds(target)
    assert corpus, f"no seeds in {CORPUS / target}"
    for data in corpus:
        check(data)


def test_every_corpus_directory_is_a_target() -> None:
    assert sorted(path.name for path in CORPUS.iterdir()) == sorted(TARGETS)
