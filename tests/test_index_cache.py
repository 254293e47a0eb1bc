"""The result index's row cache (report/index.py): a warm build reads only changed run
folders and writes the same Parquet bytes as a full rebuild."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from support.synthetic_runs import write_sweep

from slicert_ops.report import index as index_mod
from slicert_ops.report.index import ROW_CACHE, build_index, write_index

EXP = "cache_sweep"


@pytest.fixture()
def results(tmp_path: Path) -> Path:
    root = tmp_path / "results"
    write_sweep(root, EXP, tile_sizes=(8, 16), micro_tiles=(1, 2), unrolls=(1, 4),
                slices=(32,), repeat=2, failed=lambda c, r: c == 1 and r == 0,
                validation=lambda c, r: True if c < 3 else None, prediction_version="2")
    return root


def parquet_bytes(results: Path, tmp: Path, name: str, **kw) -> bytes:
    path = write_index(results / EXP, tmp / f"{name}.parquet",
                       df=build_index(results, experiment=EXP, **kw))
    return path.read_bytes()


def count_reads(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    seen: list[Path] = []
    real = index_mod.read_run

    def spy(d):
        seen.append(Path(d))
        return real(d)

    monkeypatch.setattr(index_mod, "read_run", spy)
    return seen


def test_warm_index_is_byte_identical_and_reads_nothing(results, tmp_path, monkeypatch):
    full = parquet_bytes(results, tmp_path, "full", cache=False)
    assert not (results / EXP / ROW_CACHE).exists()  # no cache without asking
    cold = parquet_bytes(results, tmp_path, "cold")
    assert (results / EXP / ROW_CACHE).is_file()
    reads = count_reads(monkeypatch)
    warm = parquet_bytes(results, tmp_path, "warm")
    assert reads == []
    assert full == cold == warm
    # another spelling of the same folders: run_dir follows the caller's path
    df = build_index(results / EXP)
    assert reads == [] and df["run_dir"].str.startswith(str(results / EXP)).all()


def test_a_changed_run_invalidates_its_row_only(results, tmp_path, monkeypatch):
    build_index(results, experiment=EXP)
    run = results / EXP / "run_0003"
    (run / "validation.json").write_text(json.dumps(
        {"success": False, "failed_expectations": ["trace_events/cycles_monotone"]}))
    reads = count_reads(monkeypatch)
    df = build_index(results, experiment=EXP)
    assert reads == [run]
    row = df.set_index("run").loc["run_0003"]
    assert not row["valid"] and row["validation_failed"] == "trace_events/cycles_monotone"
    reads.clear()
    monkeypatch.undo()
    assert parquet_bytes(results, tmp_path, "a") == parquet_bytes(results, tmp_path, "b",
                                                                  cache=False)


def test_replaced_added_and_removed_runs(results, tmp_path, monkeypatch):
    build_index(results, experiment=EXP)
    exp = results / EXP
    # a re-measured run: a new folder under the same name (new inodes)
    shutil.copytree(exp / "run_0001", exp / "run_0001.new")
    man = json.loads((exp / "run_0001.new" / "manifest.json").read_text())
    man["host_timings_s"]["run"] = 9.5
    (exp / "run_0001.new" / "manifest.json").write_text(json.dumps(man))
    shutil.rmtree(exp / "run_0001")
    (exp / "run_0001.new").rename(exp / "run_0001")
    shutil.copytree(exp / "run_0002", exp / "run_0099")   # added
    shutil.rmtree(exp / "run_0004")                        # removed
    (exp / "run_0005" / "tvm_config.json").unlink()        # a source file gone
    reads = count_reads(monkeypatch)
    df = build_index(results, experiment=EXP)
    assert sorted(p.name for p in reads) == ["run_0001", "run_0005", "run_0099"]
    assert "run_0004" not in set(df["run"])
    assert df.set_index("run").loc["run_0001", "host_timings_s.run"] == 9.5
    monkeypatch.undo()
    assert parquet_bytes(results, tmp_path, "a") == parquet_bytes(results, tmp_path, "b",
                                                                  cache=False)


def test_a_damaged_or_foreign_cache_is_ignored(results, tmp_path):
    full = parquet_bytes(results, tmp_path, "full", cache=False)
    (results / EXP / ROW_CACHE).write_text("{not json")
    assert parquet_bytes(results, tmp_path, "a") == full
    doc = json.loads((results / EXP / ROW_CACHE).read_text())
    doc["code"] = "another-version"
    for entry in doc["rows"].values():
        entry["row"]["kernel_cycles"] = -1  # would show if the cache were used
    (results / EXP / ROW_CACHE).write_text(json.dumps(doc))
    assert parquet_bytes(results, tmp_path, "b") == full


def test_a_read_only_folder_still_indexes(results, tmp_path, monkeypatch):
    def refuse(*a, **k):
        raise PermissionError("read-only")

    monkeypatch.setattr(index_mod, "write_text_atomic", refuse)
    assert len(build_index(results, experiment=EXP)) == 16
    assert not (results / EXP / ROW_CACHE).exists()
