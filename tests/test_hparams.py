"""Declared hyperparameter constraints (pcl.algorithms.hparams) and their use in config validation."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest
import yaml
from typer.testing import CliRunner

from pcl.algorithms import ALGORITHMS, LocalSGD, make_hparams
from pcl.algorithms.hparams import HparamError, build, constraint_of, param
from pcl.cli import app
from pcl.config import ConfigError, validate_experiment

CONFIG = {"name": "hp", "kind": "federated",
          "data": {"source": {"name": "digits"}, "partition": {"scheme": "iid", "num_clients": 4, "seed": 0}},
          "model": {"name": "linear"}, "train": {"rounds": 2, "eval_every": 1},
          "algorithms": {"fedavg": {"default": {"lr": 0.1}}}, "seeds": [0]}


@dataclass
class Toy:
    lr: float = param(0.05, gt=0)
    steps: int = param(3, ge=1)
    frac: float = param(1.0, gt=0, le=1)
    mode: str = param("sgd", choices=("sgd", "adam"))
    alpha: float | None = param(None, ge=0, le=1)
    grid: list[float] = param(default_factory=lambda: [0.0, 1.0], ge=0, le=1, min_items=1)
    sizes: list[int] = param(default_factory=lambda: [2], ge=1)
    flag: bool = False
    half: int = param(4, ge=2)

    def __post_init__(self):
        if self.half % 2:
            raise ValueError(f"half={self.half} must be even")


def _errors(cls, values) -> list[str]:
    with pytest.raises(HparamError) as info:
        build(cls, values)
    return info.value.errors


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_every_algorithm_defaults_build_and_satisfy_their_constraints(name):
    cls = ALGORITHMS[name].Hparams
    hp = make_hparams(cls, {})
    assert isinstance(hp, cls)
    # the defaults themselves pass the declared checks when given explicitly
    again = build(cls, {f.name: getattr(hp, f.name) for f in dataclasses.fields(cls)})
    assert again == hp


def test_values_are_converted_and_kept():
    hp = build(Toy, {"lr": 1, "grid": [0, 1], "alpha": 0, "sizes": [3, 4], "flag": True, "half": 6})
    assert hp.lr == 1.0 and isinstance(hp.lr, float) and all(isinstance(a, float) for a in hp.grid)
    assert isinstance(hp.alpha, float) and hp.sizes == [3, 4] and hp.flag is True and hp.half == 6
    assert build(Toy, {"alpha": None}).alpha is None and build(Toy, None) == Toy()


def test_unknown_key_suggests_the_closest_and_lists_the_known():
    (msg,) = _errors(ALGORITHMS["ditto"].Hparams, {"lamda": 0.1})
    assert msg.startswith("lamda: unknown hyperparameter for DittoHparams (did you mean 'lam'?); known: ")
    assert "personal_epochs" in msg and "client_fraction" in msg


@pytest.mark.parametrize("values, field, words", [
    ({"lr": "fast"}, "lr", "expected a number, got str"),
    ({"lr": True}, "lr", "expected a number, got bool"),
    ({"lr": "1e-3"}, "lr", "write 1.0e-3"),
    ({"steps": 2.5}, "steps", "expected an integer, got float"),
    ({"steps": 4.0}, "steps", "expected an integer, got float"),
    ({"steps": True}, "steps", "expected an integer, got bool"),
    ({"steps": None}, "steps", "expected an integer, got NoneType"),
    ({"flag": 1}, "flag", "expected true or false, got int"),
    ({"mode": 3}, "mode", "expected a string, got int"),
    ({"alpha": "x"}, "alpha", "expected a number or null"),
    ({"grid": 0.5}, "grid", "expected a list of numbers, got float"),
    ({"grid": [0.5, "a"]}, "grid", "expected a list of numbers"),
    ({"sizes": [1, 2.0]}, "sizes", "expected a list of integers"),
])
def test_wrong_type_names_the_field_and_value(values, field, words):
    (msg,) = _errors(Toy, values)
    assert msg.startswith(f"{field}={values[field]!r}: ") and words in msg


@pytest.mark.parametrize("values, expected", [
    ({"lr": 0}, "lr=0: must be > 0"),
    ({"lr": -1.5}, "lr=-1.5: must be > 0"),
    ({"lr": float("nan")}, "lr=nan: must be > 0"),
    ({"steps": 0}, "steps=0: must be >= 1"),
    ({"frac": 0}, "frac=0: must be in (0, 1]"),
    ({"frac": 1.01}, "frac=1.01: must be in (0, 1]"),
    ({"alpha": 1.5}, "alpha=1.5: must be in [0, 1] or null"),
    ({"grid": [0.0, 2.0]}, "grid=[0.0, 2.0]: every item must be in [0, 1]"),
    ({"grid": []}, "grid=[]: must have at least 1 item"),
    ({"sizes": [0]}, "sizes=[0]: every item must be >= 1"),
])
def test_out_of_range_names_the_field_value_and_range(values, expected):
    assert _errors(Toy, values) == [expected]


def test_bad_choice_lists_the_choices_and_suggests():
    assert _errors(Toy, {"mode": "adm"}) == ["mode='adm': must be one of 'sgd', 'adam' (did you mean 'adam'?)"]
    assert _errors(Toy, {"mode": "zzz"}) == ["mode='zzz': must be one of 'sgd', 'adam'"]


def test_all_field_errors_are_collected_and_cross_field_checks_run_after():
    errors = _errors(Toy, {"lrr": 1, "lr": 0, "steps": 1.5, "half": 3})
    assert [e.split(":")[0].split("=")[0] for e in errors] == ["lrr", "lr", "steps"]  # __post_init__ not reached
    assert _errors(Toy, {"half": 3}) == ["half=3 must be even"]  # the cross-field check, once the fields pass
    assert _errors(Toy, {"half": 1}) == ["half=1: must be >= 2"]
    assert isinstance(HparamError(["x"]), ValueError)


def test_param_declares_one_constraint_per_field():
    f = {f.name: f for f in dataclasses.fields(LocalSGD)}
    assert constraint_of(f["lr"]).gt == 0 and constraint_of(f["batch_size"]).ge == 1
    assert set(constraint_of(f["optimizer"]).choices) == {"sgd", "adam"}
    with pytest.raises(TypeError):
        param(1, default_factory=list)
    with pytest.raises(TypeError):
        param(1, gt=0, ge=0)


@pytest.mark.parametrize("name, values, start", [
    ("fedavg", {"lr": "fast"}, "lr='fast': expected a number"),
    ("fedavg", {"lr": 0}, "lr=0: must be > 0"),
    ("fedavg", {"batch_size": 0}, "batch_size=0: must be >= 1"),
    ("fedavg", {"client_fraction": 0}, "client_fraction=0: must be in (0, 1]"),
    ("fedavg", {"optimizer": "adagrad"}, "optimizer='adagrad': must be one of"),
    ("fedavg", {"weight_decay": -1e-4}, "weight_decay=-0.0001: must be >= 0"),
    ("ditto", {"local_epochs": -3}, "local_epochs=-3: must be > 0 or null"),
    ("ditto", {"lam": -1}, "lam=-1: must be >= 0"),
    ("fedavg_ft", {"ft_lr": 0}, "ft_lr=0: must be > 0"),
    ("model_averaging", {"alpha": 1.5}, "alpha=1.5: must be in [0, 1] or null"),
    ("model_averaging", {"select_by": "acc_"}, "select_by='acc_': must be one of 'loss', 'acc'"),
    ("wga", {"weights": "oracle"}, "weights='oracle': must be one of"),
    ("wga", {"memory": 0}, "memory=0: must be in (0, 1] or null"),
    ("wga", {"estimate_batch": 30, "estimate_groups": 4}, "estimate_groups=4 must split estimate_batch=30"),
    ("wga", {"local_steps": 0}, "local_steps=0: must be >= 1 or null"),
    ("bias_correction", {"a": -0.1}, "a=-0.1: must be in [0, 1]"),
    ("bias_correction", {"c_init_batch": 0}, "c_init_batch=0: must be >= 1 or null"),
    ("bias_correction", {"fresh_samples": "yes"}, "fresh_samples='yes': expected true or false"),
    ("local", {"local_steps": 3}, "local_epochs=1.0, local_steps=3: set exactly one"),
    ("local", {"local_epochs": None}, "local_epochs=None, local_steps=None: set exactly one"),
    ("wga", {"local_epochs": 1.0, "local_steps": None}, "local_epochs=1.0: WGAHparams counts a round in local_steps"),
])
def test_algorithm_hparams_reject_bad_values(name, values, start):
    with pytest.raises(ValueError) as info:
        make_hparams(ALGORITHMS[name].Hparams, values)
    assert str(info.value).startswith(start), str(info.value)


def test_local_steps_reach_the_local_spec():
    hp = make_hparams(ALGORITHMS["fedavg"].Hparams, {"local_steps": 7, "local_epochs": None})
    spec = hp.local_spec()
    assert spec.local_steps == 7 and spec.local_epochs is None
    pair = make_hparams(ALGORITHMS["wga"].Hparams, {})
    assert (pair.lr, pair.batch_size, pair.local_steps, pair.local_epochs) == (0.1, 16, 5, None)
    assert isinstance(pair, LocalSGD)


def test_validate_experiment_collects_every_setting_error():
    cfg = {**CONFIG, "algorithms": {"ditto": {"x": {"lamda": 0.1, "local_epochs": -3}, "ok": {"lam": 1.0}},
                                    "fedavg": {"y": {"batch_size": 0}}, "nope": {"z": {}}}}
    with pytest.raises(ConfigError) as info:
        validate_experiment(cfg, origin="exp.yaml")
    lines = str(info.value).splitlines()[1:]
    assert lines[0].strip().startswith("exp.yaml: algorithms: unknown algorithm(s) ['nope']")
    assert [ln.strip() for ln in lines[1:]] == [
        "exp.yaml: algorithms.ditto.x: lamda: unknown hyperparameter for DittoHparams (did you mean 'lam'?); known: "
        "batch_size, client_fraction, drop_last, lam, local_epochs, local_steps, lr, optimizer, personal_epochs, weight_decay",
        "exp.yaml: algorithms.ditto.x: local_epochs=-3: must be > 0 or null",
        "exp.yaml: algorithms.fedavg.y: batch_size=0: must be >= 1"]
    assert validate_experiment(CONFIG)["algorithms"] == CONFIG["algorithms"]


@pytest.mark.parametrize("where, value", [("rounds", 4.0), ("rounds", True), ("eval_every", 2.0)])
def test_float_or_bool_for_a_schema_integer_is_rejected(where, value):
    cfg = {**CONFIG, "train": {**CONFIG["train"], where: value}}
    with pytest.raises(ConfigError, match=rf"train\.{where}: {value} is not of type 'integer'"):
        validate_experiment(cfg)
    assert validate_experiment({**CONFIG, "train": {**CONFIG["train"], where: 4}})["train"][where] == 4


def test_pcl_validate_names_the_setting_and_both_fields(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({**CONFIG, "algorithms": {"ditto": {"x": {"lamda": 0.1, "local_epochs": -3}}}}))
    res = CliRunner().invoke(app, ["validate", str(path)])
    assert res.exit_code != 0
    out = res.output
    assert "algorithms.ditto.x: lamda: unknown hyperparameter" in out and "did you mean 'lam'" in out
    assert "algorithms.ditto.x: local_epochs=-3: must be > 0" in out
    path.write_text(yaml.safe_dump({**CONFIG, "train": {"rounds": 4.0}}))
    res = CliRunner().invoke(app, ["validate", str(path)])
    assert res.exit_code != 0 and "train.rounds: 4.0 is not of type 'integer'" in res.output
    path.write_text(yaml.safe_dump(CONFIG))
    res = CliRunner().invoke(app, ["validate", str(path)])
    assert res.exit_code == 0 and "ok" in res.output
