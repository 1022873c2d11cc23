"""What the verbs' options share (commands/arguments.py): the lengths a verb evaluates."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import pytest

from anchor_lightning.commands.arguments import lengths_to_run
from anchor_lightning.commands.diagnose import default_lengths
from anchor_lightning.commands.evaluate import ruler_lengths


def test_the_lengths_asked_for_or_the_verbs_default_for_the_trained_length():
    config = SimpleNamespace(max_position_embeddings=8192)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # within the trained length: no warning
        assert lengths_to_run(config, [1024, 2048], "cpu", default_lengths) == [1024, 2048]
        assert lengths_to_run(config, None, "cuda", ruler_lengths) == [4096, 8192]
        assert lengths_to_run(config, None, "cuda", default_lengths) == [64, 256, 1024, 4096]
        assert lengths_to_run(SimpleNamespace(), [512], "cpu", default_lengths) == [512]  # no trained length known


def test_lengths_past_the_trained_length_are_run_with_a_warning():
    config = SimpleNamespace(max_position_embeddings=8192)
    with pytest.warns(UserWarning, match=r"lengths up to 32768 exceed the model's max_position_embeddings \(8192\)"):
        assert lengths_to_run(config, [16384, 32768], "cuda", ruler_lengths) == [16384, 32768]
