"""free_port: below the kernel's ephemeral range, never twice, and from this worker's slice only."""

from __future__ import annotations

import pytest

from services.common import ports


def test_slices_split_the_range_and_ports_come_from_this_slice(monkeypatch):
    monkeypatch.delenv("GENIR_PORT_SLICE", raising=False)
    whole = ports._draw_range()
    monkeypatch.setenv("GENIR_PORT_SLICE", "0/2")
    a = ports._draw_range()
    monkeypatch.setenv("GENIR_PORT_SLICE", "1/2")
    b = ports._draw_range()
    assert whole[0] == a[0] and a[1] < b[0] and b[1] <= whole[1]
    assert b[1] - b[0] > 1000
    drawn = {ports.free_port() for _ in range(50)}
    assert len(drawn) == 50 and all(b[0] <= p <= b[1] for p in drawn)


@pytest.mark.parametrize("bad", ["2/2", "-1/2", "0/0"])
def test_a_slice_outside_its_count_is_refused(monkeypatch, bad):
    monkeypatch.setenv("GENIR_PORT_SLICE", bad)
    with pytest.raises(ValueError, match="GENIR_PORT_SLICE"):
        ports.free_port()
