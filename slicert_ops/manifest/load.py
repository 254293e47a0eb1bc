"""Load a manifest: YAML -> overrides (--set, Airflow conf) -> validated Experiment."""

from __future__ import annotations

import copy
import difflib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from slicert_ops.errors import InputError
from slicert_ops.manifest.schema import (
    DEFAULT_OPERATOR,
    EXPERIMENT_FIELDS,
    OPERATOR_FIELDS,
    RESERVED_SECTIONS,
    SEARCH_FIELDS,
    SECTIONS,
    Field,
    Problems,
)

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


@dataclass(frozen=True)
class SearchSpec:
    """experiment.search with every default filled (once, at load)."""

    strategy: str = "grid"
    budget: int | None = None
    objective: str = "kernel_cycles"
    seed: int = 0
    rounds: int | None = None
    exploration: float = 0.2

    @property
    def searching(self) -> bool:
        """A strategy that measures a budget of candidates (not the whole grid)."""
        return self.strategy != "grid"

    def to_dict(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "budget": self.budget, "objective": self.objective,
                "seed": self.seed, "rounds": self.rounds, "exploration": self.exploration}


@dataclass(frozen=True)
class Experiment:
    """A validated manifest with every default filled in."""

    name: str
    repeat: int
    nightly: bool
    description: str
    operator: dict[str, Any]
    parameters: dict[str, list[int] | None]
    runner: dict[str, Any]
    logging: dict[str, bool]
    source: str  # the manifest file (for error messages and provenance)
    search: SearchSpec | None = None  # experiment.search (None: no section, a grid sweep)
    # experiment.model (a network, docs/networks.md): then `operator` is empty and
    # `parameters` is the per-type / per-layer mapping plus the network-wide `slice` list.
    model: dict[str, Any] | None = None

    @property
    def is_network(self) -> bool:
        return self.model is not None

    @property
    def search_spec(self) -> SearchSpec:
        """experiment.search, or the grid sweep's defaults when the section is absent."""
        return self.search or SearchSpec()

    @property
    def searching(self) -> bool:
        return self.search_spec.searching

    def to_dict(self) -> dict[str, Any]:
        """The normalized manifest, as it would be written back to YAML."""
        body: dict[str, Any] = {"model": copy.deepcopy(self.model)} if self.is_network \
            else {"operator": dict(self.operator)}
        return {"experiment": {
            "name": self.name, "repeat": self.repeat, "nightly": self.nightly,
            "description": self.description, **body,
            "parameters": {k: v for k, v in self.parameters.items() if v is not None},
            "runner": dict(self.runner), "logging": dict(self.logging),
            **({"search": self.search.to_dict()} if self.search else {}),
        }}


def load_manifest(path: str | Path, overrides: list[str] | tuple[str, ...] = (),
                  conf: dict[str, Any] | None = None) -> Experiment:
    """Read, override and validate a manifest; raise InputError naming file, field and fix."""
    path = Path(path)
    raw = read_yaml(path)
    for item in overrides:
        apply_set(raw, item, str(path))
    if conf:
        apply_conf(raw, conf, str(path))
    return validate(raw, str(path))


def read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise InputError("no such manifest file", file=str(path),
                         fix="give the path of a YAML manifest, e.g. experiments/conv2d_5x5.yaml")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
        raise InputError(f"not valid YAML at {where}: {getattr(exc, 'problem', exc)}",
                         file=str(path)) from None
    except UnicodeDecodeError:
        raise InputError("not a text file", file=str(path)) from None
    if not isinstance(data, dict) or "experiment" not in data:
        raise InputError("the top level must be a mapping with one key 'experiment'",
                         file=str(path), field="experiment",
                         fix="start the file with 'experiment:' and indent the fields below it")
    return data


def apply_set(raw: dict[str, Any], item: str, file: str) -> None:
    """`--set a.b.c=value`: value parsed as YAML; the leading 'experiment.' is optional."""
    if "=" not in item:
        raise InputError(f"--set {item!r} has no '='", field="--set",
                         fix="write --set experiment.repeat=1")
    key, _, text = item.partition("=")
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise InputError(f"--set {item!r} names no field", field="--set")
    if parts[0] != "experiment":
        parts.insert(0, "experiment")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    node: Any = raw
    for part in parts[:-1]:
        if not isinstance(node, dict):
            raise InputError(f"cannot set {key}: {part} is not a mapping", field=key)
        node = node.setdefault(part, {})
    if not isinstance(node, dict):
        raise InputError(f"cannot set {key}: its parent is not a mapping", field=key)
    node[parts[-1]] = value


def apply_conf(raw: dict[str, Any], conf: dict[str, Any], file: str) -> None:
    """Deep-merge an Airflow-style conf ({"repeat": 2, "parameters": {...}}) into experiment."""
    if not isinstance(conf, dict):
        raise InputError("conf must be a JSON object", field="conf",
                         fix='e.g. {"repeat": 2, "parameters": {"unroll": [1, 4]}}')
    conf = conf.get("experiment", conf) if set(conf) == {"experiment"} else conf
    exp = raw.setdefault("experiment", {})
    if not isinstance(exp, dict):
        return
    _merge(exp, copy.deepcopy(conf))


def _merge(dst: dict[str, Any], src: dict[str, Any]) -> None:
    for key, value in src.items():
        if isinstance(value, dict) and isinstance(dst.get(key), dict):
            _merge(dst[key], value)
        else:
            dst[key] = value


def validate(raw: dict[str, Any], file: str) -> Experiment:
    """Check every field; collect all problems; raise one InputError listing them."""
    problems = Problems(file)
    extra_top = sorted(set(raw) - {"experiment"})
    for key in extra_top:
        problems.add(key, "unknown top-level key (only 'experiment' is allowed)")
    exp = raw.get("experiment")
    if not isinstance(exp, dict):
        problems.add("experiment", f"must be a mapping, got {_type(exp)}")
        _raise(problems)
    known = set(EXPERIMENT_FIELDS) | set(SECTIONS) | {"operator", "search", "model"}
    for key in exp:
        if key in RESERVED_SECTIONS:
            problems.add(f"experiment.{key}", "reserved section; remove this block")
        elif key not in known:
            problems.add(f"experiment.{key}", "unknown field" + _suggest(key, known)
                         + f"; valid fields: {', '.join(sorted(known))}")
    top = {name: check_field(f"experiment.{name}", exp.get(name), spec, problems)
           for name, spec in EXPERIMENT_FIELDS.items()}
    if isinstance(top.get("name"), str) and not NAME_RE.match(top["name"]):
        problems.add("experiment.name", f"{top['name']!r} is not a valid name: use letters, "
                     "digits, '_', '-' and '.', starting with a letter or digit (max 100)")
    network = "model" in exp
    if network and "operator" in exp:
        problems.add("experiment.model", "a manifest has either experiment.operator (one "
                     "operator) or experiment.model (a network), not both; remove one")
    sections = {sec: check_section(f"experiment.{sec}", exp.get(sec), fields, problems)
                for sec, fields in SECTIONS.items() if not (network and sec == "parameters")}
    if network:
        sections["parameters"] = _network_parameters(exp.get("parameters"), problems)
    operator = {} if network else check_operator(exp.get("operator"), problems)
    search = check_search(exp.get("search"), problems) if "search" in exp else None
    if problems:
        _raise(problems)
    runner = sections["runner"]
    if runner["rt_deadline_us"] is None:
        runner["rt_deadline_us"] = runner["irq_period_us"]
    if runner["irq_jitter_us"] >= runner["irq_period_us"]:
        problems.add("experiment.runner.irq_jitter_us",
                     f"{runner['irq_jitter_us']} must be smaller than irq_period_us "
                     f"({runner['irq_period_us']})")
        _raise(problems)
    max_slice = (1 << 24) // runner["cpu_mhz"]
    too_long = [v for v in sections["parameters"]["slice"] if v > max_slice]
    if too_long:
        problems.add("experiment.parameters.slice",
                     f"{too_long[0]} us is longer than the 24-bit SysTick can time at "
                     f"{runner['cpu_mhz']} MHz: at most {max_slice} us (2^24 cycles)")
        _raise(problems)
    if network and search is not None and search.strategy == "meta_schedule":
        problems.add("experiment.search.strategy",
                     "meta_schedule searches TVM's own schedules of one operator; a network "
                     "is searched task by task over its schedule spaces: use random or "
                     "cost_model (budget = candidates per task)")
        _raise(problems)
    model = _check_network(raw, file, runner, sections["parameters"]) if network else None
    irq_bounds = _irq_bounds(search)
    if irq_bounds and not runner["simulate_irq_load"]:
        problems.add("experiment.search.objective",
                     f"bounds {', '.join(irq_bounds)}, which is only measured under IRQ load "
                     "(0 without it); set experiment.runner.simulate_irq_load: true")
        _raise(problems)
    return Experiment(
        name=top["name"], repeat=top["repeat"], nightly=top["nightly"],
        description=top["description"] or "", operator=operator,
        parameters=sections["parameters"], runner=runner, logging=sections["logging"],
        source=file, search=search, model=model,
    )


def _network_parameters(value: Any, problems: Problems) -> dict[str, Any]:
    """experiment.parameters of a network: kept as given (the network package checks the
    per-type / per-layer spaces against the layers); `slice` is checked here."""
    from slicert_ops.manifest.schema import PARAMETER_FIELDS

    if value is None:
        value = {}
    if not isinstance(value, dict):
        problems.add("experiment.parameters", f"must be a mapping, got {_type(value)}")
        value = {}
    params = copy.deepcopy(value)
    params["slice"] = check_field("experiment.parameters.slice", value.get("slice"),
                                  PARAMETER_FIELDS["slice"], problems)
    return params


def _check_network(raw: dict[str, Any], file: str, runner: dict[str, Any],
                   parameters: dict[str, Any]) -> dict[str, Any]:
    """experiment.model: layers, schedule spaces and the memory plan on runner.board, all
    checked before any work (a NetworkError, an InputError, lists every problem). Returns
    the model with an ONNX path made absolute (workers may run elsewhere). The checked
    network stays cached for the expansion (network.candidates.load_context)."""
    from slicert_ops.network.candidates import load_context, spec_of

    model = copy.deepcopy(raw["experiment"]["model"])
    if isinstance(model, dict) and isinstance(model.get("onnx"), str):
        onnx = Path(model["onnx"])
        model["onnx"] = str(onnx if onnx.is_absolute() else (Path(file).parent / onnx).resolve())
    load_context(spec_of(model, parameters, file), runner["board"])
    return model


def check_section(path: str, value: Any, fields: dict[str, Field],
                  problems: Problems) -> dict[str, Any]:
    if value is None:
        value = {}
    if not isinstance(value, dict):
        problems.add(path, f"must be a mapping, got {_type(value)}")
        value = {}
    for key in value:
        if key not in fields:
            problems.add(f"{path}.{key}", "unknown field" + _suggest(key, fields)
                         + f"; valid fields: {', '.join(fields)}")
    return {name: check_field(f"{path}.{name}", value.get(name), spec, problems)
            for name, spec in fields.items()}


def check_search(value: Any, problems: Problems) -> SearchSpec | None:
    """experiment.search: strategy, budget, objective (parsed strictly), seed, rounds,
    exploration. Returns the normalized section (None when absent)."""
    from slicert_ops.search.objective import ObjectiveError, parse_objective

    if value is None:
        return None
    search = check_section("experiment.search", value, SEARCH_FIELDS, problems)
    if not isinstance(value, dict):
        return None
    if search["strategy"] != "grid" and search["budget"] is None and "budget" not in value:
        problems.add("experiment.search.budget", f"is required with strategy "
                     f"{search['strategy']!r} (how many candidates to measure, e.g. 64)")
    if search["exploration"] is not None and search["exploration"] > 1:
        problems.add("experiment.search.exploration",
                     f"{search['exploration']:g} is above 1 (a share of each round: 0..1)")
    if isinstance(search["objective"], str):
        try:
            obj = parse_objective(search["objective"])
        except ObjectiveError as exc:
            problems.add("experiment.search.objective", str(exc))
        else:
            search["objective"] = obj.text
    if problems:
        return None
    return SearchSpec(strategy=search["strategy"], budget=search["budget"],
                      objective=search["objective"], seed=search["seed"],
                      rounds=search["rounds"], exploration=float(search["exploration"]))


def _irq_bounds(search: SearchSpec | None) -> list[str]:
    """Bounds of the (valid) objective on metrics measured only under IRQ load."""
    from slicert_ops.search.objective import IRQ_METRICS, parse_objective

    if not search:
        return []
    return [b.text for b in parse_objective(search.objective).bounds
            if b.metric in IRQ_METRICS]


def check_operator(value: Any, problems: Problems) -> dict[str, Any]:
    if value is None:
        return dict(DEFAULT_OPERATOR)
    if not isinstance(value, dict):
        problems.add("experiment.operator", f"must be a mapping, got {_type(value)}")
        return dict(DEFAULT_OPERATOR)
    kind = value.get("type")
    if kind not in OPERATOR_FIELDS:
        problems.add("experiment.operator.type",
                     f"{kind!r} is not an operator; valid: {', '.join(OPERATOR_FIELDS)}")
        return dict(DEFAULT_OPERATOR)
    return check_section("experiment.operator", value, OPERATOR_FIELDS[kind], problems)


def check_field(path: str, value: Any, spec: Field, problems: Problems) -> Any:
    """Validate one value against its Field; returns the normalized value or the default."""
    if value is None:
        if spec.required:
            problems.add(path, f"is required ({spec.help})")
        return copy.deepcopy(spec.default)
    kind = spec.kind
    if kind == "bool":
        if not isinstance(value, bool):
            problems.add(path, f"must be true or false, got {value!r}")
            return spec.default
        return value
    if kind == "str":
        if not isinstance(value, str):
            problems.add(path, f"must be a string, got {_type(value)}")
            return spec.default
        return value
    if kind == "enum":
        if value not in spec.choices:
            problems.add(path, f"{value!r} is not valid; valid: {', '.join(spec.choices)}")
            return spec.default
        return value
    if kind in ("int", "float"):
        return _check_number(path, value, spec, problems)
    if kind in ("int_list", "shape"):
        return _check_int_list(path, value, spec, problems)
    if kind == "form_list":
        return _check_form_list(path, value, spec, problems)
    raise AssertionError(kind)


def _check_form_list(path: str, value: Any, spec: Field, problems: Problems) -> Any:
    """Kernel forms by name or number -> numbers (the candidate's schedule holds numbers)."""
    values = value if isinstance(value, list) else [value]
    valid = ", ".join(f"{n} ({i})" for i, n in enumerate(spec.choices))
    out = []
    for v in values:
        if isinstance(v, str) and v in spec.choices:
            out.append(spec.choices.index(v))
        elif isinstance(v, int) and not isinstance(v, bool) and 0 <= v < len(spec.choices):
            out.append(v)
        else:
            problems.add(path, f"{v!r} is not a kernel form; valid: {valid}")
            return copy.deepcopy(spec.default)
    if not out:
        problems.add(path, "must not be empty (give at least one form)")
        return copy.deepcopy(spec.default)
    if len(set(out)) != len(out):
        problems.add(path, f"has duplicate forms {values}")
        return copy.deepcopy(spec.default)
    return out


def _check_number(path: str, value: Any, spec: Field, problems: Problems) -> Any:
    ok_types = (int,) if spec.kind == "int" else (int, float)
    if isinstance(value, bool) or not isinstance(value, ok_types):
        problems.add(path, f"must be {'an integer' if spec.kind == 'int' else 'a number'}, "
                     f"got {value!r}")
        return spec.default
    if spec.minimum is not None and value < spec.minimum:
        problems.add(path, f"{value} is below the minimum {spec.minimum:g} ({spec.help})")
    if spec.maximum is not None and value > spec.maximum:
        problems.add(path, f"{value} is above the maximum {spec.maximum:g} ({spec.help})")
        return spec.default
    return float(value) if spec.kind == "float" else value


def _check_int_list(path: str, value: Any, spec: Field, problems: Problems) -> Any:
    if spec.kind == "int_list" and isinstance(value, int) and not isinstance(value, bool):
        value = [value]  # a single value is a one-element sweep
    if not isinstance(value, list):
        problems.add(path, f"must be a list of integers, got {_type(value)}")
        return copy.deepcopy(spec.default)
    if not value:
        problems.add(path, "must not be empty (give at least one value)")
        return copy.deepcopy(spec.default)
    bad = [v for v in value if isinstance(v, bool) or not isinstance(v, int)]
    if bad:
        problems.add(path, f"must hold integers only, got {bad[0]!r}")
        return copy.deepcopy(spec.default)
    if spec.minimum is not None and min(value) < spec.minimum:
        problems.add(path, f"values must be >= {spec.minimum:g}, got {min(value)}")
        return copy.deepcopy(spec.default)
    if spec.length is not None and len(value) != spec.length:
        problems.add(path, f"must have {spec.length} values ({spec.help}), got {len(value)}")
        return copy.deepcopy(spec.default)
    if spec.kind == "int_list" and len(set(value)) != len(value):
        problems.add(path, f"has duplicate values {value}")
        return copy.deepcopy(spec.default)
    return list(value)


def _suggest(key: str, known: Any) -> str:
    close = difflib.get_close_matches(str(key), list(known), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _type(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__


def _raise(problems: Problems) -> None:
    lines = "\n  - ".join(problems.items)
    raise InputError(f"invalid manifest:\n  - {lines}", file=problems.file)


def parse_conf(text: str) -> dict[str, Any]:
    """Parse a JSON conf given on a command line."""
    try:
        conf = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"--conf is not valid JSON: {exc.msg} at column {exc.colno}",
                         field="--conf") from None
    if not isinstance(conf, dict):
        raise InputError("--conf must be a JSON object", field="--conf")
    return conf
