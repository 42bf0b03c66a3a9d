"""params.yaml, loaded once into frozen dataclasses and validated at the door.

Every check names the offending field (`runs.x.train.epochs: must be > 0`), so a typo in
params.yaml or in `dvc exp run -S` fails before any work starts.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cnnbench.errors import CnnbenchError

SOURCE_FORMATS = ("cifar10-python", "image-csv", "npz")


class ConfigError(CnnbenchError):
    """params.yaml (or a -S override) holds a value cnnbench cannot use."""


@dataclass(frozen=True)
class SourceConfig:
    """A raw source: where `fetch` gets it and how `prepare` reads it."""

    name: str
    uri: str
    format: str
    md5: str | None = None

    def __post_init__(self) -> None:
        _check(self.format in SOURCE_FORMATS, f"sources.{self.name}.format",
               f"must be one of {', '.join(SOURCE_FORMATS)}, not {self.format!r}")
        _check(bool(self.uri), f"sources.{self.name}.uri", "must not be empty")


@dataclass(frozen=True)
class DatasetConfig:
    """A prepared dataset: a source, resized, filtered and split."""

    name: str
    source: str
    image_size: int
    val_fraction: float = 0.1
    test_fraction: float = 0.0
    split_seed: int = 0
    drop_classes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        where = f"datasets.{self.name}"
        _check(self.image_size >= 4, f"{where}.image_size", "must be >= 4")
        for key in ("val_fraction", "test_fraction"):
            _check(0.0 <= getattr(self, key) < 1.0, f"{where}.{key}", "must be in [0, 1)")
        _check(self.val_fraction + self.test_fraction < 1.0, where,
               "val_fraction + test_fraction must leave some training data")


@dataclass(frozen=True)
class AugmentConfig:
    """On-device augmentation of training batches."""

    crop: str = "pad"
    pad: int = 4
    scale_min: float = 0.35
    flip: bool = True

    def validate(self, where: str) -> None:
        _check(self.crop in ("pad", "resized", "none"), f"{where}.crop",
               f"must be pad, resized or none, not {self.crop!r}")
        _check(self.pad >= 0, f"{where}.pad", "must be >= 0")
        _check(0.0 < self.scale_min <= 1.0, f"{where}.scale_min", "must be in (0, 1]")


@dataclass(frozen=True)
class TrainConfig:
    """How one run trains; params.yaml's `train:` block with the run's overrides merged in."""

    epochs: int = 30
    batch_size: int = 512
    optimizer: str = "sgd"
    lr: float = 0.4
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "onecycle"
    warmup_fraction: float = 0.15
    label_smoothing: float = 0.1
    seed: int = 0
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    amp: bool = True
    channels_last: bool = True
    compile: bool = False
    pretrained: str | None = None
    max_images: int = 0
    deterministic: bool = True

    def validate(self, where: str) -> None:
        _check(self.epochs > 0, f"{where}.epochs", "must be > 0")
        _check(self.batch_size > 0, f"{where}.batch_size", "must be > 0")
        _check(self.lr > 0, f"{where}.lr", "must be > 0")
        _check(self.weight_decay >= 0, f"{where}.weight_decay", "must be >= 0")
        _check(0.0 <= self.label_smoothing < 1.0, f"{where}.label_smoothing", "must be in [0, 1)")
        _check(0.0 <= self.warmup_fraction < 1.0, f"{where}.warmup_fraction", "must be in [0, 1)")
        _check(self.optimizer in ("sgd", "adamw"), f"{where}.optimizer",
               f"must be sgd or adamw, not {self.optimizer!r}")
        _check(self.schedule in ("onecycle", "cosine"), f"{where}.schedule",
               f"must be onecycle or cosine, not {self.schedule!r}")
        _check(self.max_images >= 0, f"{where}.max_images", "must be >= 0")
        self.augment.validate(f"{where}.augment")


@dataclass(frozen=True)
class EvaluateConfig:
    tta_flip: bool = True
    batch_size: int = 1024


@dataclass(frozen=True)
class RunConfig:
    """One (dataset, model, training) combination of the comparison."""

    name: str
    suite: str
    dataset: str
    model: str
    train: TrainConfig


@dataclass(frozen=True)
class SuiteConfig:
    """A group of runs rendered by one report into `dir`."""

    name: str
    dir: str


@dataclass(frozen=True)
class CheckConfig:
    """The CI gate: which suite and metrics, and how far a metric may drop."""

    suite: str = "offline"
    metrics: tuple[str, ...] = ("test_top1",)
    tolerance: float = 0.02
    tolerances: dict = field(default_factory=dict)  # metric -> tolerance, overriding `tolerance`

    def tolerance_for(self, metric: str) -> float:
        return float(self.tolerances.get(metric, self.tolerance))


@dataclass(frozen=True)
class ReportConfig:
    """What the report marks and the study's own figures shown beside ours (keyed by run)."""

    highlight_classes: tuple[str, ...] = ()
    highlight_label: str = "highlighted class"  # what the mark means, in the figures' legends
    family_names: dict = field(default_factory=dict)  # model family -> display name (resnet: ResNet)
    reference: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Params:
    sources: dict[str, SourceConfig]
    datasets: dict[str, DatasetConfig]
    models: dict[str, Any]  # name -> cnnbench.models.ModelSpec
    evaluate: EvaluateConfig
    runs: dict[str, RunConfig]
    suites: dict[str, SuiteConfig]
    check: CheckConfig
    report: ReportConfig = field(default_factory=ReportConfig)

    def source(self, name: str) -> SourceConfig:
        return _lookup(self.sources, name, "source")

    def dataset(self, name: str) -> DatasetConfig:
        return _lookup(self.datasets, name, "dataset")

    def model(self, name: str) -> Any:
        return _lookup(self.models, name, "model")

    def run(self, name: str) -> RunConfig:
        return _lookup(self.runs, name, "run")

    def suite(self, name: str) -> SuiteConfig:
        return _lookup(self.suites, name, "suite")

    def suite_runs(self, suite: str) -> dict[str, RunConfig]:
        self.suite(suite)
        return {name: run for name, run in self.runs.items() if run.suite == suite}


# ------------------------------------------------------------------ loading


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml; raise ConfigError naming the first bad field."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file. Run cnnbench from the project root.") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return parse_params(raw)


def parse_params(raw: dict) -> Params:
    """Validate an already-loaded params mapping (see load_params)."""
    from cnnbench.models import spec_from_dict  # models imports torch; keep config light

    sources = {n: _build(SourceConfig, {"name": n, **_mapping(d, f"sources.{n}")}, f"sources.{n}")
               for n, d in _section(raw, "sources").items()}
    datasets = {n: _build(DatasetConfig, {"name": n, **_mapping(d, f"datasets.{n}")}, f"datasets.{n}")
                for n, d in _section(raw, "datasets").items()}
    for name, ds in datasets.items():
        _check(ds.source in sources, f"datasets.{name}.source",
               f"unknown source {ds.source!r}; known: {', '.join(sources)}")
    models = {n: spec_from_dict(n, _mapping(d, f"models.{n}")) for n, d in _section(raw, "models").items()}
    train_defaults = _mapping(raw.get("train") or {}, "train")
    suites = {n: _build(SuiteConfig, {"name": n, **_mapping(d, f"suites.{n}")}, f"suites.{n}")
              for n, d in (raw.get("suites") or {}).items()}
    runs = {}
    for name, d in (raw.get("runs") or {}).items():
        where = f"runs.{name}"
        d = dict(_mapping(d, where))
        overrides = _mapping(d.pop("train", None) or {}, f"{where}.train")
        train = _build(TrainConfig, _deep_merge(train_defaults, overrides), f"{where}.train")
        train.validate(f"{where}.train")
        run = _build(RunConfig, {"name": name, "train": train, **d}, where)
        _check(run.dataset in datasets, f"{where}.dataset",
               f"unknown dataset {run.dataset!r}; known: {', '.join(datasets)}")
        _check(run.model in models, f"{where}.model",
               f"unknown model {run.model!r}; known: {', '.join(models)}")
        _check(run.suite in suites, f"{where}.suite",
               f"unknown suite {run.suite!r}; known: {', '.join(suites) or '(none declared)'}")
        runs[name] = run
    return Params(
        sources=sources,
        datasets=datasets,
        models=models,
        evaluate=_build(EvaluateConfig, _mapping(raw.get("evaluate") or {}, "evaluate"), "evaluate"),
        runs=runs,
        suites=suites,
        check=_build(CheckConfig, _mapping(raw.get("check") or {}, "check"), "check"),
        report=_build(ReportConfig, _mapping(raw.get("report") or {}, "report"), "report"),
    )


def config_to_dict(obj: Any) -> Any:
    """A dataclass config as plain data (for logging it next to the metrics)."""
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj


# ------------------------------------------------------------------ helpers


def _check(ok: bool, where: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"params: {where}: {message}")


def _lookup(table: dict, name: str, kind: str):
    if name not in table:
        known = ", ".join(table) or "(none)"
        raise ConfigError(f"params: unknown {kind} {name!r}; known: {known}")
    return table[name]


def _section(raw: dict, key: str) -> dict:
    value = raw.get(key)
    _check(isinstance(value, dict) and bool(value), key, "must be a non-empty mapping")
    return value


def _mapping(value: Any, where: str) -> dict:
    _check(isinstance(value, dict), where, f"must be a mapping, not {type(value).__name__}")
    return value


def _deep_merge(base: dict, override: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _build(cls, data: dict, where: str):
    """Instantiate dataclass `cls` from `data`, checking names and types field by field."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    _check(not unknown, f"{where}.{unknown[0]}" if unknown else where,
           f"unknown field; expected one of {', '.join(sorted(names - {'name'}))}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            _check(not required, f"{where}.{f.name}", "is required")
            continue
        kwargs[f.name] = _coerce(data[f.name], hints[f.name], f"{where}.{f.name}")
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, where: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            _check(type(None) in args, where, "must not be null")
            return None
        return _coerce(value, next(a for a in args if a is not type(None)), where)
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        return _build(hint, _mapping(value, where), where)
    if origin is tuple:
        _check(isinstance(value, (list, tuple)), where, "must be a list")
        return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
    if hint is bool:
        _check(isinstance(value, bool), where, f"must be true or false, not {value!r}")
        return value
    if hint is int:
        _check(isinstance(value, int) and not isinstance(value, bool), where,
               f"must be an integer, not {value!r}")
        return value
    if hint is float:
        _check(isinstance(value, (int, float)) and not isinstance(value, bool), where,
               f"must be a number, not {value!r}")
        return float(value)
    if hint is str:
        _check(isinstance(value, str), where, f"must be a string, not {value!r}")
        return value
    return value
