"""params.yaml, loaded once into frozen dataclasses and validated in one place.

Every block of params.yaml is a dataclass here (model specs in models/specs.py), each with its value checks
(`validate`); `validation.build` is the one validator that turns YAML data into them, so a typo in
params.yaml or in `dvc exp run -S` fails with `params: runs.x.train.epochs: must be > 0` before
any work starts. This module imports neither torch nor torchvision.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cnnbench.core.errors import ConfigError, one_line
from cnnbench.models.specs import ModelSpec, parse_model_spec
from cnnbench.params.limits import MAX_BATCH, MAX_EPOCHS, MAX_IMAGE_SIZE, MAX_PAD, MAX_PROCESSES, MAX_SEED
from cnnbench.params.metric_registry import DEPLOYED_METRICS, METRICS
from cnnbench.params.sources import SourceConfig, parse_sources
from cnnbench.params.validation import (
    REPORTS_ROOT,
    Validated,
    build,
    check,
    cross_check,
    deep_merge,
    is_reports_path,
    load_yaml,
    lookup,
    mapping,
    named_table,
    reject_unknown,
    require,
    shown,
)

SECTIONS = ("sources", "local_sources", "datasets", "models", "train", "evaluate", "launch", "runs", "suites",
            "report", "check", "claims", "audit")
AUDIT_FEATURES = ("auto", "pixels", "imagenet")
# Test-time augmentation, per dataset: none, or class probabilities averaged with the horizontal mirror's.
# hflip only where a mirrored image keeps its class (a butterfly, a truck; not a digit or a letter).
TTA_MODES = ("none", "hflip")
# a_same: a negative control (an A/A pair: one recipe, two seed sets), which passes when found within noise
CLAIM_DIRECTIONS = ("a_better", "b_better", "a_not_worse", "b_not_worse", "a_same")



# ------------------------------------------------------------------ data


@dataclass(frozen=True)
class NearDuplicatesConfig(Validated):
    """Near-duplicate detection in `prepare`: pHash distance threshold and what to do across splits."""

    max_distance: int = 8              # bits of 64 (image or its mirror); docs/datasets.md: what 8 catches
    remove_train_copies: bool = True   # drop the train copy of a val/test image's near twin
    max_removed_share: float = 0.05    # ... but stop when that would drop more of the train split (small data)

    def validate(self) -> None:
        require(0 <= self.max_distance <= 32, "max_distance",
                 "must be in 0..32 (unrelated images differ in about 32 of the 64 bits)")
        require(0 <= self.max_removed_share <= 1, "max_removed_share", "must be in [0, 1]")


@dataclass(frozen=True)
class DatasetConfig(Validated):
    """A prepared dataset: a source, resized, filtered and split."""

    name: str
    source: str
    image_size: int
    val_fraction: float = 0.1
    test_fraction: float = 0.0
    split_seed: int = 0
    drop_classes: tuple[str, ...] = ()
    near_duplicates: NearDuplicatesConfig = field(default_factory=NearDuplicatesConfig)
    tta: str = "none"                  # none | hflip: evaluate also reports top-1 with flip TTA (TTA_MODES)

    def validate(self) -> None:
        require(4 <= self.image_size <= MAX_IMAGE_SIZE, "image_size", f"must be in 4..{MAX_IMAGE_SIZE}")
        require(self.tta in TTA_MODES, "tta", f"must be one of {', '.join(TTA_MODES)}, not {self.tta!r} "
                                              "(hflip only where a mirrored image keeps its class)")
        for key in ("val_fraction", "test_fraction"):
            require(0.0 <= getattr(self, key) < 1.0, key, "must be in [0, 1)")
        require(self.val_fraction + self.test_fraction < 1.0, "test_fraction",
                 "val_fraction + test_fraction must leave some training data")


@dataclass(frozen=True)
class AuditConfig(Validated):
    """The `audit` stage: label quality from out-of-sample predictions of a linear probe on frozen features."""

    features: str = "auto"     # auto (imagenet when its weights are cached, else pixels) | pixels | imagenet
    folds: int = 5             # K of the K-fold cross_val_predict
    pca_dims: int = 64         # pixels features: principal components kept of the downsampled pixels
    max_listed: int = 100      # suspicious images listed in the JSON, most suspicious first
    sheet_images: int = 24     # ... and drawn on the sheet
    seed: int = 0

    def validate(self) -> None:
        require(self.features in AUDIT_FEATURES, "features",
                 f"must be one of {', '.join(AUDIT_FEATURES)}, not {self.features!r}")
        require(self.folds >= 2, "folds", "must be >= 2")
        require(self.pca_dims >= 1, "pca_dims", "must be >= 1")
        require(self.max_listed >= 0 and self.sheet_images >= 0, "max_listed", "counts must be >= 0")


# ------------------------------------------------------------------ training and evaluation


@dataclass(frozen=True)
class AugmentConfig(Validated):
    """On-device augmentation of training batches."""

    crop: str = "pad"
    pad: int = 4
    scale_min: float = 0.35
    flip: bool = True

    def validate(self) -> None:
        require(self.crop in ("pad", "resized", "none"), "crop", f"must be pad, resized or none, not {self.crop!r}")
        require(0 <= self.pad <= MAX_PAD, "pad", f"must be in 0..{MAX_PAD}")
        require(0.0 < self.scale_min <= 1.0, "scale_min", "must be in (0, 1]")


@dataclass(frozen=True)
class TrainConfig(Validated):
    """How one run trains; params.yaml's `train:` block with the run's overrides merged in."""

    epochs: int = 30
    batch_size: int = 512
    optimizer: str = "sgd"
    lr: float = 0.4
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "onecycle"
    warmup_fraction: float = 0.15
    div_factor: float = 10.0           # one-cycle: the schedule starts at lr / div_factor ...
    final_div_factor: float = 100.0    # ... and ends at lr / div_factor / final_div_factor
    label_smoothing: float = 0.1
    seed: int = 0
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    amp: bool = True                   # bf16 autocast on CUDA
    cpu_amp: bool = False              # ... and on a CPU that computes bf16 natively (AMX); ignored elsewhere
    channels_last: bool = True
    compile: bool = False
    pretrained: str | None = None
    max_images: int = 0
    deterministic: bool = True
    sync_batchnorm: bool = False       # under DDP on CUDA: BatchNorm statistics over the global batch

    def validate(self) -> None:
        require(0 < self.epochs <= MAX_EPOCHS, "epochs", f"must be in 1..{MAX_EPOCHS}")
        require(0 < self.batch_size <= MAX_BATCH, "batch_size", f"must be in 1..{MAX_BATCH}")
        require(0 <= self.seed <= MAX_SEED, "seed", f"must be in 0..{MAX_SEED}")
        require(0 < self.lr < math.inf, "lr", "must be a finite number > 0")
        require(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        require(0.0 <= self.momentum < 1.0, "momentum", "must be in [0, 1)")
        require(0.0 <= self.label_smoothing < 1.0, "label_smoothing", "must be in [0, 1)")
        require(0.0 <= self.warmup_fraction < 1.0, "warmup_fraction", "must be in [0, 1)")
        require(self.div_factor >= 1.0, "div_factor", "must be >= 1")
        require(self.final_div_factor >= 1.0, "final_div_factor", "must be >= 1")
        require(self.optimizer in ("sgd", "adamw"), "optimizer", f"must be sgd or adamw, not {self.optimizer!r}")
        require(self.schedule in ("onecycle", "cosine"), "schedule",
                 f"must be onecycle or cosine, not {self.schedule!r}")
        require(self.max_images >= 0, "max_images", "must be >= 0")


@dataclass(frozen=True)
class EvaluateConfig(Validated):
    """How `evaluate` scores a checkpoint on the test split (test-time augmentation is per dataset: `tta`)."""

    batch_size: int = 1024
    inference: bool = True             # also measure inference cost into eval/inference.json
    deploy: bool = True                # ... and in ONNX Runtime, fp32 and int8 (deploy.py; needs the deploy extra)
    inference_cpu_batch: int = 32      # CPU throughput batch (the GPU's is batch_size)

    def validate(self) -> None:
        require(0 < self.batch_size <= MAX_BATCH, "batch_size", f"must be in 1..{MAX_BATCH}")
        require(0 < self.inference_cpu_batch <= MAX_BATCH, "inference_cpu_batch", f"must be in 1..{MAX_BATCH}")


@dataclass(frozen=True)
class LaunchConfig(Validated):
    """How many processes train one run: torchrun's shape, read by the train stage.

    One node: `nproc_per_node` processes on this machine. Several: every node runs the same
    command with its own node rank, and node 0 (which hosts `rdzv_endpoint`) holds rank 0.
    """

    nproc_per_node: int = 1
    nnodes: int = 1
    rdzv_endpoint: str | None = None   # host:port of node 0; required when nnodes > 1

    def validate(self) -> None:
        require(1 <= self.nproc_per_node <= MAX_PROCESSES, "nproc_per_node", f"must be in 1..{MAX_PROCESSES}")
        require(1 <= self.nnodes <= MAX_PROCESSES, "nnodes", f"must be in 1..{MAX_PROCESSES}")
        if self.nnodes > 1:
            require(bool(self.rdzv_endpoint), "rdzv_endpoint",
                     "must be host:port of node 0 when nnodes > 1 (every node rendezvouses there)")
        if self.rdzv_endpoint is not None:
            host, _, port = self.rdzv_endpoint.rpartition(":")
            require(bool(host) and port.isdigit() and 0 < int(port) < 65536, "rdzv_endpoint",
                     f"must be host:port, not {self.rdzv_endpoint!r}")

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.nnodes


# ------------------------------------------------------------------ runs, suites, report, gate


@dataclass(frozen=True)
class RunConfig(Validated):
    """One (dataset, model, training) combination of the comparison, trained once per seed."""

    name: str
    suite: str
    dataset: str
    model: str
    train: TrainConfig
    seeds: tuple[int, ...] = ()  # replicates; empty means the one seed `train.seed`
    deploy: bool | None = None   # measure it as deployed (ONNX Runtime); None: `evaluate.deploy` decides

    def validate(self) -> None:
        require(all(0 <= s <= MAX_SEED for s in self.seeds), "seeds", f"must be integers in 0..{MAX_SEED}")
        require(len(set(self.seeds)) == len(self.seeds), "seeds", f"must not repeat a seed: {list(self.seeds)}")

    @property
    def replicate_seeds(self) -> tuple[int, ...]:
        """The seeds this run is trained with, one model each."""
        return self.seeds or (self.train.seed,)

    def replicate(self, seed: int) -> RunConfig:
        """This run as its one replicate with `seed`."""
        return dataclasses.replace(self, train=dataclasses.replace(self.train, seed=seed), seeds=(seed,))


@dataclass(frozen=True)
class SuiteConfig(Validated):
    """A group of runs rendered by one report into `dir`."""

    name: str
    dir: str
    # The data reports and audits the report reads, as dvc.yaml declares them its dep: reports/data
    # (every prepare and audit stage), or one file, so that the offline suite pulls in no networked stage.
    data: str = "reports/data"

    def validate(self) -> None:
        for key in ("dir", "data"):
            require(is_reports_path(getattr(self, key)), key,
                    f"must be {REPORTS_ROOT} or a folder under {REPORTS_ROOT}/, each part a name "
                    f"(A-Z a-z 0-9 . _ -, starting with a letter or digit), not {shown(getattr(self, key))}")


@dataclass(frozen=True)
class CheckConfig(Validated):
    """The CI gate: which suite and metrics, and how far a metric may drop."""

    suite: str = "offline"
    metrics: tuple[str, ...] = ("test_top1",)
    tolerance: float = 0.02
    tolerances: dict[str, float] = field(default_factory=dict)  # metric -> tolerance, overriding `tolerance`
    tolerance_from_seeds: bool = False  # instead of `tolerance`: 3 x sqrt(2) x the seed std the baseline records

    def validate(self) -> None:
        require(len(self.metrics) > 0, "metrics", "must name at least one metric: a gate over none checks nothing")
        for i, metric in enumerate(self.metrics):
            require(metric in METRICS, f"metrics[{i}]", f"{shown(metric)} is not a metric the gate knows the "
                    f"direction of; known: {', '.join(METRICS)}")
        require(math.isfinite(self.tolerance) and self.tolerance >= 0, "tolerance", "must be a number >= 0")
        for metric, tol in self.tolerances.items():
            require(metric in self.metrics, f"tolerances.{metric}",
                     f"is not a gated metric; check.metrics is {', '.join(self.metrics)}")
            require(math.isfinite(tol) and tol >= 0, f"tolerances.{metric}", "must be a number >= 0")

    def tolerance_for(self, metric: str, seed_std: float | None = None) -> float:
        """The allowed absolute drop of `metric`: its `tolerances` entry; else, with `tolerance_from_seeds`, 3 sigma
        of the difference between two seeds' values (3 x sqrt(2) x `seed_std`); else `tolerance`."""
        if metric in self.tolerances or not self.tolerance_from_seeds or seed_std is None:
            return float(self.tolerances.get(metric, self.tolerance))
        return 3 * math.sqrt(2) * seed_std


@dataclass(frozen=True)
class ReportConfig(Validated):
    """What the report marks, in which words, and the study's own figures shown beside ours."""

    highlight_classes: tuple[str, ...] = ()
    highlight_label: str = "highlighted class"  # what the mark means, in the figures' legends
    family_names: dict[str, str] = field(default_factory=dict)  # model family -> display name
    reference: dict[str, dict[str, float]] = field(default_factory=dict)  # run -> the study's figures


@dataclass(frozen=True)
class ClaimConfig(Validated):
    """A conclusion of the study, re-tested by the report: run A against run B on one per-run metric."""

    id: str
    text: str
    run_a: str
    run_b: str
    direction: str                   # a_better | b_better | a_not_worse | b_not_worse | a_same (a control)
    metric: str = "test_top1"        # any number a stage writes to a run's metrics.json (latency, say)
    better: str = "higher"           # higher | lower: which way the metric improves
    margin: float = 0.0              # *_not_worse: how much worse, in the metric's units, still counts as not worse
    study_metric: str | None = None  # the key of report.reference[run] holding the study's own figures

    def validate(self) -> None:
        require(self.direction in CLAIM_DIRECTIONS, "direction",
                 f"must be one of {', '.join(CLAIM_DIRECTIONS)}, not {self.direction!r}")
        require(self.better in ("higher", "lower"), "better", f"must be higher or lower, not {self.better!r}")
        require(math.isfinite(self.margin) and self.margin >= 0, "margin", "must be a number >= 0")
        require(self.margin == 0 or self.direction.endswith("not_worse"), "margin",
                 "applies only to a_not_worse and b_not_worse")
        require(self.run_a != self.run_b, "run_b", "must differ from run_a")


@dataclass(frozen=True)
class Params:
    """The whole of params.yaml, validated and cross-checked."""

    sources: dict[str, SourceConfig]
    datasets: dict[str, DatasetConfig]
    models: dict[str, ModelSpec]
    train: TrainConfig
    evaluate: EvaluateConfig
    runs: dict[str, RunConfig]
    suites: dict[str, SuiteConfig]
    check: CheckConfig
    report: ReportConfig = field(default_factory=ReportConfig)
    claims: tuple[ClaimConfig, ...] = ()
    launch: LaunchConfig = field(default_factory=LaunchConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)

    def source(self, name: str) -> SourceConfig:
        return lookup(self.sources, name, "source")

    def dataset(self, name: str) -> DatasetConfig:
        return lookup(self.datasets, name, "dataset")

    def model(self, name: str) -> ModelSpec:
        return lookup(self.models, name, "model")

    def run(self, name: str) -> RunConfig:
        return lookup(self.runs, name, "run")

    def suite(self, name: str) -> SuiteConfig:
        return lookup(self.suites, name, "suite")

    def suite_claims(self, suite: str) -> tuple[ClaimConfig, ...]:
        """The claims whose runs report `suite` renders."""
        return tuple(c for c in self.claims if self.run(c.run_a).suite == suite)


# ------------------------------------------------------------------ loading


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml; raise ConfigError naming the first bad field."""
    path = Path(path)
    try:
        raw = load_yaml(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file. Run cnnbench from the project root.") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: unreadable ({err})") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {one_line(err)}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return parse_params(raw)


def parse_params(raw: dict) -> Params:
    """Validate an already-loaded params mapping (see load_params)."""
    reject_unknown(raw, SECTIONS, "")
    sources = parse_sources(raw)
    datasets = named_table(raw, "datasets", lambda n, d, w: build(DatasetConfig, {"name": n, **mapping(d, w)}, w))
    for name, ds in datasets.items():
        cross_check(ds.source in sources, f"datasets.{name}.source", ds.source, "source", sources)
    models = named_table(raw, "models", parse_model_spec)
    train_raw = mapping(raw.get("train") or {}, "train")
    train = build(TrainConfig, train_raw, "train")  # the defaults alone: a typo there is `train.<key>`
    suites = named_table(raw, "suites", lambda n, d, w: build(SuiteConfig, {"name": n, **mapping(d, w)}, w),
                    required=False)
    runs = named_table(raw, "runs", lambda n, d, w: _parse_run(n, d, w, train_raw), required=False)
    for name, run in runs.items():
        cross_check(run.dataset in datasets, f"runs.{name}.dataset", run.dataset, "dataset", datasets)
        cross_check(run.model in models, f"runs.{name}.model", run.model, "model", models)
        cross_check(run.suite in suites, f"runs.{name}.suite", run.suite, "suite", suites)
        augment, size = run.train.augment, datasets[run.dataset].image_size
        check(augment.crop != "pad" or augment.pad < size, f"runs.{name}.train.augment.pad",
              f"must be smaller than datasets.{run.dataset}.image_size ({size})")
    gate = build(CheckConfig, mapping(raw.get("check") or {}, "check"), "check")
    if suites:  # a project that only fetches and prepares declares no suite to gate
        cross_check(gate.suite in suites, "check.suite", gate.suite, "suite", suites)
    if "tta_flip" in (evaluate := mapping(raw.get("evaluate") or {}, "evaluate")):
        raise ConfigError("params: evaluate.tta_flip: moved to datasets.<name>.tta (none | hflip), chosen per dataset")
    evaluate = build(EvaluateConfig, evaluate, "evaluate")
    return Params(sources=sources, datasets=datasets, models=models, train=train, evaluate=evaluate,
                  runs=runs, suites=suites, check=gate,
                  report=build(ReportConfig, mapping(raw.get("report") or {}, "report"), "report"),
                  claims=_parse_claims(raw.get("claims") or [], runs, evaluate.deploy),
                  launch=build(LaunchConfig, mapping(raw.get("launch") or {}, "launch"), "launch"),
                  audit=build(AuditConfig, mapping(raw.get("audit") or {}, "audit"), "audit"))


def _parse_claims(raw: Any, runs: dict[str, RunConfig], deploy: bool) -> tuple[ClaimConfig, ...]:
    check(isinstance(raw, list), "claims", "must be a list of claims")
    claims = tuple(build(ClaimConfig, mapping(item, f"claims[{i}]"), f"claims[{i}]") for i, item in enumerate(raw))
    for i, claim in enumerate(claims):
        check([c.id for c in claims].count(claim.id) == 1, f"claims[{i}].id", f"{claim.id!r} is used twice")
        for key in ("run_a", "run_b"):
            cross_check(getattr(claim, key) in runs, f"claims[{i}].{key}", getattr(claim, key), "run", runs)
            run = runs[getattr(claim, key)]  # a claim on an ONNX Runtime or 224 px latency needs both runs deployed
            deployed = deploy if run.deploy is None else run.deploy
            check(deployed or claim.metric not in DEPLOYED_METRICS,
                  f"claims[{i}].metric", f"{claim.metric} is measured as deployed; set runs.{run.name}.deploy: true")
        check(runs[claim.run_a].suite == runs[claim.run_b].suite, f"claims[{i}].run_b",
              "must be in run_a's suite: a claim is re-tested in one suite's report")
    return claims


def _parse_run(name: str, raw: Any, where: str, train_defaults: dict) -> RunConfig:
    raw = dict(mapping(raw, where))
    overrides = mapping(raw.pop("train", None) or {}, f"{where}.train")
    train = build(TrainConfig, deep_merge(train_defaults, overrides), f"{where}.train")
    return build(RunConfig, {"name": name, "train": train, **raw}, where)
