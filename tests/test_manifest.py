"""Manifest rules: the spec's example verbatim, defaults, overrides, and clear errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from slicert_ops.errors import InputError
from slicert_ops.manifest import expand, load_manifest, parse_conf
from slicert_ops.manifest.expand import candidate_id

ROOT = Path(__file__).resolve().parents[1]
SPEC_MANIFEST = ROOT / "experiments" / "conv2d_5x5.yaml"
VERSIONS = {"tvm": "t", "gcc": "g", "qemu": "q", "runtime": "r", "cycle_model": "c",
            "plugin": "p", "slicert": "s"}


def write(tmp_path: Path, text: str, name: str = "m.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_spec_manifest_accepted_verbatim() -> None:
    exp = load_manifest(SPEC_MANIFEST)
    assert exp.name == "conv2d_5x5_latency"
    assert exp.repeat == 30
    assert exp.runner["simulate_irq_load"] is True
    assert exp.logging == {"raw": True, "compress": True}
    assert exp.operator["type"] == "conv2d" and exp.operator["kernel"] == [5, 5]
    cands = expand(exp, VERSIONS).candidates
    assert len(cands) == 3 * 3 * 2
    # every tile size of the spec is meaningful for the default operator (32x32 output)
    assert {c.schedule["tile_size"] for c in cands} == {8, 16, 32}
    assert all(c.schedule["micro_tile"] <= c.schedule["tile_size"] for c in cands)


def test_candidate_ids_are_content_hashes() -> None:
    exp = load_manifest(SPEC_MANIFEST)
    a = expand(exp, VERSIONS).candidates
    b = expand(exp, VERSIONS).candidates
    assert [c.id for c in a] == [c.id for c in b]
    assert len({c.id for c in a}) == len(a)
    other = expand(exp, {**VERSIONS, "gcc": "other"}).candidates
    assert {c.id for c in other}.isdisjoint({c.id for c in a})
    c = a[0]
    # the timeout cannot change a measurement: not part of the id
    assert candidate_id(c.operator, c.schedule, {**c.runner, "timeout_s": 999}, VERSIONS) == c.id
    assert candidate_id(c.operator, c.schedule, {**c.runner, "irq_period_us": 999},
                        VERSIONS) != c.id


def test_set_overrides_any_field(tmp_path: Path) -> None:
    exp = load_manifest(SPEC_MANIFEST, ["experiment.repeat=1", "parameters.unroll=[1, 4]",
                                        "experiment.runner.irq_period_us=300"])
    assert exp.repeat == 1
    assert exp.parameters["unroll"] == [1, 4]
    assert exp.runner["irq_period_us"] == 300
    assert exp.runner["rt_deadline_us"] == 300  # defaults to the period


def test_conf_merges_like_airflow() -> None:
    exp = load_manifest(SPEC_MANIFEST, conf={"repeat": 2, "parameters": {"unroll": [1, 4]}})
    assert exp.repeat == 2 and exp.parameters["unroll"] == [1, 4]
    assert exp.parameters["tile_size"] == [8, 16, 32]


@pytest.mark.parametrize(("body", "field", "hint"), [
    ("experiment:\n  name: x\n  parameters: {tile_size: [8]}\n  repat: 3\n",
     "experiment.repat", "did you mean 'repeat'"),
    ("experiment:\n  name: x\n  repeat: three\n  parameters: {tile_size: [8]}\n",
     "experiment.repeat", "must be an integer"),
    ("experiment:\n  name: x\n  parameters: {tile_size: []}\n",
     "experiment.parameters.tile_size", "must not be empty"),
    ("experiment:\n  name: x\n  parameters: {tile_size: [8], unroll: [1.5]}\n",
     "experiment.parameters.unroll", "integers only"),
    ("experiment:\n  name: x\n  parameters: {tile_size: [8]}\n  runner: {simulate_irq_load: 1}\n",
     "experiment.runner.simulate_irq_load", "true or false"),
    ("experiment:\n  name: x\n  parameters: {tile_size: [8], tile: [1]}\n",
     "experiment.parameters.tile", "did you mean 'tile_size'"),
    ("experiment:\n  name: x\n", "experiment.parameters.tile_size", "required"),
    ("experiment:\n  name: 'a b/c'\n  parameters: {tile_size: [8]}\n",
     "experiment.name", "not a valid name"),
    ("experiment:\n  name: x\n  parameters: {tile_size: [8]}\n  operator: {type: pool}\n",
     "experiment.operator.type", "valid: conv2d, dense"),
    ("experiment:\n  name: x\n  parameters: {tile_size: [8]}\n"
     "  runner: {irq_period_us: 100, irq_jitter_us: 100}\n",
     "experiment.runner.irq_jitter_us", "smaller than irq_period_us"),
])
def test_bad_fields_are_named(tmp_path: Path, body: str, field: str, hint: str) -> None:
    path = write(tmp_path, body)
    with pytest.raises(InputError) as err:
        load_manifest(path)
    text = str(err.value)
    assert str(path) in text and field in text and hint in text


def test_all_problems_reported_at_once(tmp_path: Path) -> None:
    path = write(tmp_path, "experiment:\n  name: x\n  repeat: 0\n"
                           "  parameters: {tile_size: [8], slice: []}\n")
    with pytest.raises(InputError) as err:
        load_manifest(path)
    assert "experiment.repeat" in str(err.value) and "experiment.parameters.slice" in str(err.value)


def test_not_yaml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not valid YAML at line 3"):
        load_manifest(write(tmp_path, "experiment:\n  name: [x\n"))
    with pytest.raises(InputError, match="no such manifest file"):
        load_manifest(tmp_path / "nope.yaml")
    with pytest.raises(InputError, match="top level"):
        load_manifest(write(tmp_path, "- 1\n- 2\n"))
    with pytest.raises(InputError, match="--conf is not valid JSON"):
        parse_conf("{repeat: 2")


def test_impossible_schedule_rejected_before_work(tmp_path: Path) -> None:
    path = write(tmp_path, "experiment:\n  name: x\n  parameters:\n    tile_size: [8, 64]\n"
                           "    unroll: [3]\n")
    with pytest.raises(InputError) as err:
        expand(load_manifest(path), VERSIONS)
    text = str(err.value)
    assert "tile_size: value 64" in text and "valid range 1..32" in text
    assert "unroll: value 3" in text and "does not divide" in text


def test_combination_impossible_only_together_is_skipped(tmp_path: Path) -> None:
    path = write(tmp_path, "experiment:\n  name: x\n  parameters:\n    tile_size: [2, 8]\n"
                           "    micro_tile: [1, 4]\n")
    ex = expand(load_manifest(path), VERSIONS)
    scheds = [(c.schedule["tile_size"], c.schedule["micro_tile"]) for c in ex.candidates]
    assert scheds == [(2, 1), (8, 1), (8, 4)]
    assert len(ex.skipped) == 1 and "micro_tile" in ex.skipped[0]


def test_operator_too_big_for_board(tmp_path: Path) -> None:
    path = write(tmp_path, "experiment:\n  name: big\n  operator:\n    type: conv2d\n"
                           "    input: [1, 68, 68, 8]\n    kernel: [5, 5]\n"
                           "    out_channels: 16\n  parameters: {tile_size: [8]}\n")
    with pytest.raises(InputError) as err:
        expand(load_manifest(path), VERSIONS)
    assert "bytes of RAM" in str(err.value) and "experiment.operator" in str(err.value)


def test_kernel_larger_than_input(tmp_path: Path) -> None:
    path = write(tmp_path, "experiment:\n  name: x\n  operator:\n    type: conv2d\n"
                           "    input: [1, 4, 4, 1]\n    kernel: [5, 5]\n    out_channels: 2\n"
                           "  parameters: {tile_size: [1]}\n")
    with pytest.raises(InputError, match="experiment.operator.kernel"):
        expand(load_manifest(path), VERSIONS)


def test_dense_manifest(tmp_path: Path) -> None:
    exp = load_manifest(ROOT / "experiments" / "dense_small.yaml")
    cands = expand(exp, VERSIONS).candidates
    assert exp.operator["type"] == "dense" and len(cands) == 3 * 2 * 2


def test_cli_check_exit_codes(tmp_path: Path) -> None:
    cli = [sys.executable, "-m", "slicert_ops.cli"]
    ok = subprocess.run([*cli, "check", str(SPEC_MANIFEST)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "18 candidates x 30 repeats = 540 runs" in ok.stdout
    bad = write(tmp_path, "experiment:\n  name: x\n  parameters: {tile_size: [8]}\n  foo: 1\n")
    res = subprocess.run([*cli, "check", str(bad)], capture_output=True, text=True)
    assert res.returncode == 2
    assert "experiment.foo: unknown field" in res.stderr and "Traceback" not in res.stderr
    res = subprocess.run([*cli, "run", str(bad)], capture_output=True, text=True)
    assert res.returncode == 2 and "Traceback" not in res.stderr


def test_kernel_form_axes(tmp_path: Path) -> None:
    """form (names or numbers), pixel_block and reduction_unroll are schedule axes; without
    form each schedule gets the generator's default form, resolved into the candidate."""
    base = ("experiment:\n  name: f\n  operator: {type: conv2d, input: [1, 12, 12, 4], "
            "kernel: [3, 3], out_channels: 8, padding: 1}\n  parameters:\n"
            "    tile_size: [4]\n    unroll: [2]\n")
    cands = expand(load_manifest(write(tmp_path, base)), VERSIONS).candidates
    # a padded conv2d whose patch fits a stack array: im2col, 2 pixels per register block
    assert [c.schedule for c in cands] == [{"tile_size": 4, "micro_tile": 4, "unroll": 2,
                                            "slice": 64, "form": 2, "pixel_block": 2,
                                            "reduction_unroll": 4}]
    exp = load_manifest(write(tmp_path, base + "    form: [block, 2]\n"
                                               "    pixel_block: [1, 4]\n"))
    assert exp.parameters["form"] == [1, 2]
    scheds = [c.schedule for c in expand(exp, VERSIONS).candidates]
    assert {(s["form"], s.get("pixel_block")) for s in scheds} == {(1, 1), (1, 4), (2, 1), (2, 4)}
    direct = expand(load_manifest(write(tmp_path, base + "    form: [direct]\n")), VERSIONS)
    assert [c.schedule["form"] for c in direct.candidates] == [0]
    assert "pixel_block" not in direct.candidates[0].schedule
    # the direct form has no register block: a value no schedule can use is an error
    with pytest.raises(InputError, match="parameters.form: value 0 fits no schedule: "
                                         "pixel_block: a parameter of the blocked forms"):
        expand(load_manifest(write(tmp_path, base + "    form: [0]\n    pixel_block: [2]\n")),
               VERSIONS)
    from slicert_ops.manifest.schema import FORM_NAMES
    from slicert_ops.network.tasks import FORMS

    assert FORM_NAMES == tuple(FORMS)   # the schema's names are the generator's, in order
    assert list(FORMS.values()) == list(range(len(FORMS)))
    for bad, needle in (("[gemm]", "'gemm' is not a kernel form; valid: direct (0), block (1)"),
                        ("[5]", "5 is not a kernel form"), ("[block, 1]", "duplicate")):
        with pytest.raises(InputError) as err:
            load_manifest(write(tmp_path, base + f"    form: {bad}\n"))
        assert "experiment.parameters.form" in str(err.value) and needle in str(err.value)
    # a form the operator cannot have is an error naming the field
    with pytest.raises(InputError, match="parameters.form: value 3 fits no schedule"):
        expand(load_manifest(write(tmp_path, base + "    form: [pointwise]\n")), VERSIONS)
