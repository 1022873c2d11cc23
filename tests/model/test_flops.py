"""The card's peak behind perf/mfu: the datasheet value by the card's exact name, one user setting."""

from __future__ import annotations

import pytest

from anchor_lightning.errors import RunWarning, UserError
from anchor_lightning.model import flops


@pytest.mark.parametrize(
    "name,peak",
    [
        ("NVIDIA H100 80GB HBM3", 989e12),
        ("NVIDIA H100 PCIe", 756e12),
        ("NVIDIA H100 NVL", 835e12),
        ("NVIDIA H200", 989e12),
        ("NVIDIA H200 NVL", 835e12),
        ("NVIDIA A100-SXM4-80GB", 312e12),
        ("NVIDIA L4", 121e12),
    ],
)
def test_known_cards_get_their_own_datasheet_peak(name, peak, monkeypatch):
    monkeypatch.delenv(flops.PEAK_ENV, raising=False)
    assert flops.peak_flops(name) == peak


def test_an_unknown_card_gets_no_mfu_and_says_so_once(monkeypatch):
    monkeypatch.delenv(flops.PEAK_ENV, raising=False)
    with pytest.warns(RunWarning, match="ANCHOR_PEAK_TFLOPS"):
        assert flops.peak_flops("Some Future GPU") is None
    with pytest.WarningsRecorder() as again:
        assert flops.peak_flops("Some Future GPU") is None
    assert not again.list


def test_the_users_peak_is_one_setting_and_wins(monkeypatch):
    monkeypatch.setenv(flops.PEAK_ENV, "500")
    assert flops.peak_flops("NVIDIA H100 80GB HBM3") == 500e12
    monkeypatch.setenv(flops.PEAK_ENV, "fast")
    with pytest.raises(UserError, match="ANCHOR_PEAK_TFLOPS"):
        flops.peak_flops("NVIDIA H100 80GB HBM3")
