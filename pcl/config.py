"""Experiment configs: load YAML, validate against the one JSON Schema that Snakemake uses too."""
from __future__ import annotations

import contextlib
import copy
import hashlib
import os
from functools import cache
from pathlib import Path

import yaml
from jsonschema import Draft202012Validator, validators
from referencing import Registry, Resource

SCHEMAS = Path(__file__).parent / "schemas"
DEFAULT_TRAIN = {"rounds": 20, "eval_every": 5, "engine": "auto", "checkpoint_every": 0, "device": "cpu"}


class ConfigError(ValueError):
    """A config that does not match the schema; the message names the offending key or value."""


@cache
def _validator() -> Draft202012Validator:
    def retrieve(uri: str) -> Resource:
        return Resource.from_contents(yaml.safe_load((SCHEMAS / Path(uri).name).read_text()))

    schema = yaml.safe_load((SCHEMAS / "experiment.schema.yaml").read_text())
    return _StrictIntegers(schema, registry=Registry(retrieve=retrieve))


def _is_integer(checker, instance) -> bool:
    """JSON Schema counts 4.0 as an integer (a number with zero fractional part); a YAML config's ``rounds: 4.0``
    is a float, and code downstream (range(), tensor shapes) needs an int, so only a real int passes."""
    return isinstance(instance, int) and not isinstance(instance, bool)


_StrictIntegers = validators.extend(
    Draft202012Validator, type_checker=Draft202012Validator.TYPE_CHECKER.redefine("integer", _is_integer))


SETTING_TRAIN_KEYS = ("rounds",)  # loop keys a setting may set for itself, e.g. a pre-training longer than its uses


def split_setting(values: dict | None) -> tuple[dict, dict]:
    """A setting's ``train`` overrides (``SETTING_TRAIN_KEYS``: e.g. ``rounds`` for a pre-training run that is longer
    than the runs starting from it, as 2,000 FedAvg rounds before 500 FedAlt rounds in Pillutla et al. 2022) and its
    algorithm hyperparameters."""
    values = values or {}
    return ({k: v for k, v in values.items() if k in SETTING_TRAIN_KEYS},
            {k: v for k, v in values.items() if k not in SETTING_TRAIN_KEYS})


@cache
def _code_digest() -> bytes:
    """The bytes of every module of pcl, hashed: what a hyperparameter check's outcome can depend on."""
    digest = hashlib.sha256()
    package = Path(__file__).parent
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.digest()


def _passed_marker(algorithms: dict) -> Path | None:
    """Where a passed hyperparameter check of these settings by this code is remembered (``$PCL_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/pcl`` or ``~/.cache/pcl``): the check imports torch through the algorithm modules (~1.5 s),
    and every workflow start and ``pcl validate`` repeats it on unchanged settings. None (no caching) when a setting
    names an algorithm outside pcl (a plugin's code is not in the key) or one the registry does not know."""
    from pcl.algorithms import ALGORITHMS

    if not all(alg in ALGORITHMS and ALGORITHMS.target(alg).startswith("pcl.") for alg in algorithms):
        return None
    from pcl.io import spec_hash

    key = spec_hash({"code": _code_digest().hex(), "algorithms": algorithms})
    user_cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(os.environ.get("PCL_CACHE_DIR") or Path(user_cache, "pcl"), "hparams-passed", key)


def hparam_errors(config: dict, origin: str = "config") -> list[str]:
    """One line per problem with the hyperparameters of every (algorithm, setting) of a federated experiment:
    ``<origin>: algorithms.<alg>.<setting>: <message>`` (built as the train job builds them, so a bad value stops
    `pcl validate` and the workflow before any job runs). Each algorithm's ``Hparams`` (with its ``__post_init__``
    cross-field checks) lives in that algorithm's module, which imports torch; so a pass is remembered, keyed by the
    settings and pcl's code (``_passed_marker``), and the same settings under the same code are not checked again.
    A failure is never remembered."""
    from pcl.algorithms import ALGORITHMS
    from pcl.algorithms.hparams import HparamError, build

    marker = _passed_marker(config["algorithms"])
    if marker is not None and marker.exists():
        return []
    lines = []
    for alg, settings in config["algorithms"].items():
        if alg not in ALGORITHMS:
            continue
        for setting, values in settings.items():
            loop, values = split_setting(values)
            lines.extend(f"{origin}: algorithms.{alg}.{setting}: {k}={v!r}: must be an integer >= 1"
                         for k, v in loop.items() if isinstance(v, bool) or not isinstance(v, int) or v < 1)
            try:
                build(ALGORITHMS[alg].Hparams, values)
            except HparamError as err:
                lines.extend(f"{origin}: algorithms.{alg}.{setting}: {e}" for e in err.errors)
    if not lines and marker is not None:
        with contextlib.suppress(OSError):  # a read-only cache only costs the next check its time
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
    return lines


def validate_experiment(config: dict, origin: str = "config") -> dict:
    """Check ``config`` against the schema (integers must be ints: 4.0 is rejected), the algorithm registry's names,
    ``init_from`` references, the paper rows' runs (``reported``) and, for a federated experiment, every setting's
    hyperparameters (all problems reported at once); return it with training defaults. Only the hyperparameter
    check imports torch, and only for settings it has not passed under this code before (``hparam_errors``)."""
    errors = sorted(_validator().iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"{origin}: {'.'.join(map(str, e.absolute_path)) or '<top>'}: {e.message}" for e in errors]
        raise ConfigError("invalid experiment config:\n  " + "\n  ".join(lines))
    if config.get("kind") == "federated":
        from pcl import reported
        from pcl.algorithms import ALGORITHMS
        unknown = sorted(set(config["algorithms"]) - set(ALGORITHMS))
        lines = [f"{origin}: algorithms: unknown algorithm(s) {unknown}; known: {sorted(ALGORITHMS)}"] * bool(unknown)
        lines += hparam_errors(config, origin)
        lines += init_errors(config, origin)
        lines += reported.errors(config, origin)
        if lines:
            raise ConfigError("invalid experiment config:\n  " + "\n  ".join(lines))
        config = {**config, "train": {**DEFAULT_TRAIN, **config.get("train", {})}}
    return config


def init_reference(value) -> tuple[str, str] | None:
    """``(algorithm, setting)`` when a setting's ``init_from`` names another run of its experiment
    (``fedavg/pretrain``), None when it is a file path (anything ending in ``.pt``) or unset.

    A reference is resolved per seed to that run's ``model.pt`` (its final shared model): by the workflow, which
    also makes the referenced run an input of this one, and by ``pcl train`` relative to its output folder.
    """
    if not isinstance(value, str) or value.endswith(".pt") or value.count("/") != 1:
        return None
    alg, setting = value.split("/")
    return alg, setting


def init_errors(config: dict, origin: str) -> list[str]:
    """Every ``init_from`` reference must name another setting of the experiment, without cycles."""
    refs = {(alg, name): init_reference((values or {}).get("init_from"))
            for alg, settings in config["algorithms"].items() for name, values in settings.items()}
    lines = []
    for (alg, name), ref in refs.items():
        where = f"{origin}: algorithms.{alg}.{name}.init_from"
        if ref is None:
            continue
        if ref not in refs:
            lines.append(f"{where}: {'/'.join(ref)!r} is not a setting of this experiment; it has "
                         f"{sorted('/'.join(k) for k in refs)}")
            continue
        seen, cur = {(alg, name)}, ref
        while cur is not None and cur not in seen:
            seen.add(cur)
            cur = refs.get(cur)
        if cur is not None:
            lines.append(f"{where}: {'/'.join(ref)!r} leads back to {alg}/{name} (a cycle of init_from references)")
    return lines


def deep_merge(base: dict, override: dict) -> dict:
    """``base`` with ``override`` laid over it; nested mappings merge key by key, anything else is replaced. A mapping
    with ``_replace: true`` replaces the base's mapping whole (a paper scale's other partition scheme or model must
    not inherit the small scale's keys)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and value.get("_replace") is True:
            out[key] = copy.deepcopy({k: v for k, v in value.items() if k != "_replace"})
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def apply_scale(config: dict, scale: str = "small") -> dict:
    """The experiment at ``scale``: ``scales.<scale>`` merged over the base (``small`` = the file as written)."""
    scales = config.get("scales") or {}
    if scale != "small" and scale not in scales:
        raise ConfigError(f"scale {scale!r} is not defined by experiment {config.get('name')!r}; it has {sorted(scales)}")
    base = {k: v for k, v in config.items() if k != "scales"}
    return deep_merge(base, scales.get(scale, {}))


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects a mapping with a repeated key: plain YAML keeps the last one silently, so a
    duplicated ``lr:`` would change an experiment without anyone noticing."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # '<<: *base' may be overridden by explicit keys
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                first = seen.setdefault(key, key_node)
            except TypeError:  # an unhashable key: SafeLoader reports it itself
                continue
            if first is not key_node:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark,
                    f"duplicate key {key!r} (first defined on line {first.start_mark.line + 1})", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def load_experiment(path: str | Path, scale: str = "small") -> dict:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    try:
        config = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    validate_experiment(config, origin=str(path))  # the file as written, scales included
    return validate_experiment(apply_scale(config, scale), origin=f"{path} (scale {scale})")
