"""`slicert check` on a space with many impossible combinations: counts by reason with two
examples each; --verbose lists every one."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from slicert_ops import cli

MANIFEST = """\
experiment:
  name: big_space
  repeat: 1
  parameters:
    tile_size: [4, 6, 8, 12, 16, 24, 32]
    micro_tile: [1, 2, 3, 4, 6, 8]
    unroll: [1, 2, 4]
    slice: [16, 32, 64, 128]
"""
# tile_size x micro_tile pairs that do not fit: micro_tile larger, or not a divisor
LARGER = sum(m > t for t in (4, 6, 8, 12, 16, 24, 32) for m in (1, 2, 3, 4, 6, 8))
NOT_DIVIDING = sum(m <= t and t % m != 0 for t in (4, 6, 8, 12, 16, 24, 32)
                   for m in (1, 2, 3, 4, 6, 8))


def _check(tmp_path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> list[str]:
    path = tmp_path / "big.yaml"
    path.write_text(MANIFEST)
    assert cli.main(["check", str(path), "--out", str(tmp_path / "results"), *extra]) == 0
    return capsys.readouterr().out.splitlines()


def test_check_groups_skipped_combinations_by_reason(tmp_path, capsys) -> None:
    lines = _check(tmp_path, capsys)
    total = (LARGER + NOT_DIVIDING) * 3 * 4  # x unroll x slice
    assert total == 144
    assert f"  skipped {total} impossible combination(s), by reason (--verbose lists them " \
           "all):" in lines
    heads = [ln for ln in lines if re.match(r"^ {4} *\d+ x ", ln)]
    assert [h.split(" x ", 1) for h in heads] == [
        [f"    {NOT_DIVIDING * 12:5d}", "micro_tile: N does not divide tile_size N, e.g."],
        [f"    {LARGER * 12:5d}", "micro_tile: N is larger than tile_size N, e.g."]]
    examples = [ln.strip() for ln in lines if ln.startswith(" " * 12)]
    assert len(examples) == 4
    assert all(re.match(r"tile_size=\d+, micro_tile=\d+, unroll=\d+, slice=\d+: micro_tile: ",
                        e) for e in examples)
    assert len({e.split(": ", 1)[1] for e in examples}) == 4  # distinct reasons as examples
    assert not any("skipped (impossible together)" in ln for ln in lines)
    assert len(lines) < 12


def test_check_verbose_lists_every_skipped_combination(tmp_path, capsys) -> None:
    lines = _check(tmp_path, capsys, "--verbose")
    skipped = [ln for ln in lines if ln.startswith("  skipped (impossible together): ")]
    assert len(skipped) == 144 == len(set(skipped))
    assert "  skipped (impossible together): tile_size=4, micro_tile=3, unroll=1, slice=16: " \
           "micro_tile: 3 does not divide tile_size 4; a micro-tile must not straddle two " \
           "macro-tiles (valid: 1, 2, 4)" in lines
    assert sum(1 for ln in lines if re.match(r"^ +\d+ [0-9a-f]{16} ", ln)) == 360  # candidates
