"""params.yaml validation: every block checked at load, each error naming the field a user must fix."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml

from cnnbench.core.errors import ConfigError
from cnnbench.models.specs import parse_model_spec, spec_to_dict
from cnnbench.params.config import AugmentConfig, CheckConfig, DatasetConfig, TrainConfig, load_params, parse_params

ROOT = Path(__file__).resolve().parents[1]
RAW = yaml.safe_load((ROOT / "params.yaml").read_text())
RUN = "digits-resnet18"


def with_change(path: str, value) -> dict:
    """A copy of the project's params with one dotted key set to `value`."""
    raw = copy.deepcopy(RAW)
    *parents, last = path.split(".")
    node = raw
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return raw


def error_of(raw: dict) -> str:
    with pytest.raises(ConfigError) as err:
        parse_params(raw)
    return str(err.value)


def test_the_project_params_load():
    params = load_params(ROOT / "params.yaml")
    assert params.run(RUN).train.epochs == RAW["runs"][RUN]["train"]["epochs"]
    assert params.train == TrainConfig(**{k: v for k, v in RAW["train"].items() if k != "augment"},
                                       augment=AugmentConfig(**RAW["train"]["augment"]))


@pytest.mark.parametrize("path, value, message", [
    (f"runs.{RUN}.model", "resnet19", rf"runs\.{RUN}\.model: unknown model 'resnet19'; known: resnet18"),
    (f"runs.{RUN}.dataset", "digitz", rf"runs\.{RUN}\.dataset: unknown dataset 'digitz'"),
    (f"runs.{RUN}.suite", "nightly", rf"runs\.{RUN}\.suite: unknown suite 'nightly'"),
    (f"runs.{RUN}.train.epochs", -1, rf"runs\.{RUN}\.train\.epochs: must be in 1\.\.10000"),
    (f"runs.{RUN}.train.lr", "fast", rf"runs\.{RUN}\.train\.lr: must be a number, not 'fast'"),
    (f"runs.{RUN}.train.augment.crop", "zoom", rf"runs\.{RUN}\.train\.augment\.crop: must be pad, resized or none"),
    ("train.epochs", 0, r"params: train\.epochs: must be in 1\.\.10000"),
    ("evaluate.batch_size", 0, r"evaluate\.batch_size: must be in 1\.\.65536"),
    ("check.tolerance", -0.01, r"check\.tolerance: must be a number >= 0"),
    ("check.tolerances", {"test_top1": "tight"}, r"check\.tolerances\.test_top1: must be a number"),
    ("check.tolerances", {"test_top1x": 0.01}, r"check\.tolerances\.test_top1x: is not a gated metric"),
    ("check.metrics", [], r"check\.metrics: must name at least one metric"),
    ("check.suite", "nightly", r"check\.suite: unknown suite 'nightly'"),
    ("datasets.digits.val_fraction", 1.5, r"datasets\.digits\.val_fraction: must be in \[0, 1\)"),
    ("datasets.digits.source", "mnist", r"datasets\.digits\.source: unknown source 'mnist'"),
    ("sources.digits.format", "hdf5", r"sources\.digits\.format: must be one of"),
    ("models.resnet18.stem.kernel", 4, r"models\.resnet18\.stem\.kernel: must be an odd integer in 1\.\.15"),
    ("models.resnet18.widths", [64, 128], r"models\.resnet18\.widths: must have one entry per stage \(4"),
    ("models.mobilenet_v2.setting", [[1, 16, 1]], r"models\.mobilenet_v2\.setting\[0\]: must have 4 entries"),
    ("models.resnet18.family", "vgg", r"models\.resnet18\.family: must be one of resnet, mobilenet_v2"),
    ("report.highlight_classes", "BLUE SPOTTED CROW", r"report\.highlight_classes: must be a list"),
    ("train.sync_batchnorm", "yes", r"train\.sync_batchnorm: must be true or false, not 'yes'"),
    ("launch.nproc_per_node", 0, r"launch\.nproc_per_node: must be in 1\.\.1024"),
    ("launch.nnodes", 2, r"launch\.rdzv_endpoint: must be host:port of node 0 when nnodes > 1"),
    ("launch.rdzv_endpoint", "node0", r"launch\.rdzv_endpoint: must be host:port, not 'node0'"),
    ("launch.rdzv_endpoint", "node0:http", r"launch\.rdzv_endpoint: must be host:port, not 'node0:http'"),
])
def test_a_bad_value_names_its_field(path, value, message):
    error = error_of(with_change(path, value))
    assert error.startswith("params: ") and re.search(message, error), error


@pytest.mark.parametrize("path, typo, suggestion", [
    ("", "trian", "train"),
    ("", "evalute", "evaluate"),
    ("train", "epoch", "epochs"),
    (f"runs.{RUN}.train", "batchsize", "batch_size"),
    (f"runs.{RUN}.train.augment", "flips", "flip"),
    ("check", "metric", "metrics"),
    ("launch", "nprocs_per_node", "nproc_per_node"),
    ("datasets.digits", "drop_class", "drop_classes"),
    ("models.resnet18", "dephts", "depths"),
])
def test_a_misspelt_key_is_refused_with_the_nearest_valid_one(path, typo, suggestion):
    raw = copy.deepcopy(RAW)
    node = raw
    for key in filter(None, path.split(".")):
        node = node[key]
    node[typo] = node.get(suggestion, 1) if isinstance(node, dict) else 1
    where = f"{path}.{typo}" if path else typo
    assert f"params: {where}: unknown key; did you mean '{suggestion}'?" in error_of(raw)


def test_a_typo_in_the_global_train_block_is_reported_there_not_under_a_run():
    assert error_of(with_change("train.warmup", 0.1)).startswith("params: train.warmup: unknown key")


def test_a_partial_augment_override_keeps_the_other_defaults():
    raw = with_change(f"runs.{RUN}.train.augment", {"pad": 2})
    augment = parse_params(raw).run(RUN).train.augment
    assert augment == AugmentConfig(crop=RAW["train"]["augment"]["crop"], pad=2,
                                    scale_min=RAW["train"]["augment"]["scale_min"],
                                    flip=RAW["train"]["augment"]["flip"])


def test_a_run_override_changes_that_run_only():
    params = parse_params(with_change(f"runs.{RUN}.train.epochs", 7))
    assert params.run(RUN).train.epochs == 7
    assert all(r.train.epochs != 7 for name, r in params.runs.items() if name != RUN)


def test_runs_and_suites_may_be_absent_for_a_project_that_only_prepares_data():
    raw = {k: v for k, v in RAW.items() if k not in ("runs", "suites", "claims")}
    params = parse_params(raw)
    assert params.runs == {} and params.suites == {}


CLAIM = {"id": "c", "text": "A beats B", "run_a": RUN, "run_b": "digits-mobilenet_v2", "direction": "a_better"}


@pytest.mark.parametrize("change, message", [
    ({"direction": "a_wins"}, r"claims\[0\]\.direction: must be one of a_better, b_better, a_not_worse, b_not_worse"),
    ({"run_b": "digits-resnet19"}, r"claims\[0\]\.run_b: unknown run 'digits-resnet19'"),
    ({"run_b": "cifar10-resnet18"}, r"claims\[0\]\.run_b: must be in run_a's suite"),
    ({"run_b": RUN}, r"claims\[0\]\.run_b: must differ from run_a"),
    ({"margin": 0.01}, r"claims\[0\]\.margin: applies only to a_not_worse and b_not_worse"),
    ({"better": "faster"}, r"claims\[0\]\.better: must be higher or lower"),
    ({"metrc": "test_top1"}, r"claims\[0\]\.metrc: unknown key; did you mean 'metric'"),
    ({"run_b": "digits-resnet18_stem3", "metric": "latency_ort_b1_1t_ms", "better": "lower"},
     r"claims\[0\]\.metric: latency_ort_b1_1t_ms is measured as deployed; "
     r"set runs\.digits-resnet18_stem3\.deploy: true"),
    # an export's accuracy is measured as deployed too (a name test on "_ort" or "_224_" let it through)
    ({"run_b": "digits-resnet18_stem3", "metric": "onnx_test_top1"},
     r"claims\[0\]\.metric: onnx_test_top1 is measured as deployed; set runs\.digits-resnet18_stem3\.deploy: true"),
])
def test_a_bad_claim_names_its_field(change, message):
    error = error_of({**RAW, "claims": [{**CLAIM, **change}]})
    assert re.search(message, error), error


def test_claims_load_with_defaults_and_belong_to_their_runs_suite():
    params = load_params(ROOT / "params.yaml")
    offline = params.suite_claims("offline")
    assert offline and all(params.run(c.run_a).suite == "offline" for c in offline)
    assert len(offline) + len(params.suite_claims("study")) == len(params.claims)
    claim = parse_params({**RAW, "claims": [CLAIM]}).claims[0]
    assert (claim.metric, claim.better, claim.margin, claim.study_metric) == ("test_top1", "higher", 0.0, None)
    assert "is used twice" in error_of({**RAW, "claims": [CLAIM, CLAIM]})
    # Eager latency needs no export; a deployed one needs both runs deployed, by the run or by evaluate.deploy.
    eager = {**CLAIM, "run_b": "digits-resnet18_stem3", "metric": "latency_cpu_b1_1t_ms", "better": "lower"}
    assert parse_params({**RAW, "claims": [eager]}).claims[0].run_b == "digits-resnet18_stem3"
    deployed = {**eager, "metric": "latency_ort_224_b1_1t_ms"}
    raw = with_change("runs.digits-resnet18_stem3.deploy", None)
    assert parse_params({**raw, "claims": [deployed]}).run("digits-resnet18_stem3").deploy is None
    assert "set runs.digits-resnet18.deploy: true" in error_of({**with_change("evaluate.deploy", False),
                                                                   "claims": [deployed]})


def test_direct_construction_validates_too():
    with pytest.raises(ConfigError, match="epochs: must be in 1..10000"):
        TrainConfig(epochs=0)
    with pytest.raises(ConfigError, match="image_size: must be in 4..1024"):
        DatasetConfig(name="d", source="s", image_size=2)
    with pytest.raises(ConfigError, match="metrics: must name at least one metric"):
        CheckConfig(metrics=())


def test_a_spec_round_trips_through_plain_data():
    params = load_params(ROOT / "params.yaml")
    for name, spec in params.models.items():
        assert parse_model_spec(name, spec_to_dict(spec)) == spec


@pytest.mark.parametrize("text, message", [
    ("", "expected a mapping at the top level"),
    ("runs: [unclosed", "not valid YAML"),
])
def test_unreadable_params_files_are_one_clear_error(tmp_path, text, message):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_params(path)
    with pytest.raises(ConfigError, match="no such file"):
        load_params(tmp_path / "missing.yaml")


# ------------------------------------------------------------------ test-time augmentation, per dataset


@pytest.mark.parametrize("value, message", [
    ("flip", "params: datasets.digits.tta: must be one of none, hflip, not 'flip' (hflip only where a mirrored "
             "image keeps its class)"),
    ("HFLIP", "params: datasets.digits.tta: must be one of none, hflip, not 'HFLIP' (hflip only where a mirrored "
              "image keeps its class)"),
    (True, "params: datasets.digits.tta: must be a string, not True"),
    (None, "params: datasets.digits.tta: must be a string, not None"),
])
def test_a_bad_tta_is_refused_with_the_choices(value, message):
    assert error_of(with_change("datasets.digits.tta", value)) == message


def test_the_old_global_tta_flip_says_where_it_moved():
    assert error_of(with_change("evaluate.tta_flip", True)) == (
        "params: evaluate.tta_flip: moved to datasets.<name>.tta (none | hflip), chosen per dataset")


def test_tta_is_off_for_digits_and_hflip_for_the_photo_sets():
    params = load_params(ROOT / "params.yaml")
    assert {name: ds.tta for name, ds in params.datasets.items()} == {
        "cifar10": "hflip", "butterflies": "hflip", "butterflies_clean": "hflip", "digits": "none"}
    # Set explicitly in every dataset: evaluate declares datasets.<name>.tta, and DVC refuses a declared
    # param that params.yaml lacks, whatever the dataclass's default.
    assert all("tta" in ds for ds in RAW["datasets"].values())
    assert DatasetConfig(name="x", source="x", image_size=8).tta == "none"  # a mirror is an assumption: opt in


@pytest.mark.parametrize("section, name, uri, message", [
    ("sources", "pets", "/data/pets", r"sources\.pets\.uri: is a path on this machine: declare it under local_so"),
    ("sources", "pets", "pets.zip", r"sources\.pets\.uri: is a path on this machine"),
    ("local_sources", "pets", "kaggle:someone/pets", r"local_sources\.pets\.uri: is not a path on this machine"),
    ("local_sources", "digits", "/data/digits", r"local_sources\.digits: is also a name under sources:"),
])
def test_a_path_is_a_local_source_and_a_download_is_not(section, name, uri, message):
    raw = copy.deepcopy(RAW)
    raw.setdefault(section, {})[name] = {"uri": uri, "format": "image-folder"}
    assert re.search(message, error_of(raw)), error_of(raw)


def test_local_sources_are_sources_to_the_datasets():
    raw = with_change("local_sources", {"pets": {"uri": "/data/pets", "format": "image-folder"}})
    raw["datasets"]["pets"] = {"source": "pets", "image_size": 32}
    params = parse_params(raw)
    assert params.source("pets").local and not params.source("digits").local
    assert params.dataset("pets").source == "pets"
    assert "sources: declares no source" in error_of({**RAW, "sources": {}, "local_sources": {}})
