"""The simulation experiments (``kind: simulation``) of weighted gradient averaging, bias correction and optimal
model averaging: Monte Carlo beside the closed forms.

Four study types, each a function of its (validated) parameters that returns a tidy table, log-log slopes and
the claims it checks (``claim, spec, theory, measured, verdict, note``):

- ``speedup`` (experiment 1, paper A): stationary error vs N for local, WGA with ζ = 0 and ζ > 0, and bias
  correction (BC) with a = η/(N+1), constant step, on the quadratics of ``wga-bias-correction.md`` §1.5.
- ``horizon`` (experiment 2, paper A): error vs T with η_t = 1/(t+1); WGA with ζ > 0 flattens at its bias floor
  once T passes T* = σ²/((N+1)ζ²); local, WGA(ζ = 0) and BC keep slope −1.
- ``averaging_curve`` (experiment 3, paper B): MSE and relative benefit vs α/α* for Gaussian, Bernoulli and
  Student-t data (``optimal-model-averaging.md`` §2.4).
- ``alpha_estimation`` (experiment 4, paper B): local / global / oracle α* / plug-in α̂ across the shift Δ (§2.3).

Paper A's experiment settings and its BC update form are *reconstructed* (spec [R]); paper B's settings are the
spec's own design. Where the spec's printed numbers disagree with the closed form, the claims list both.
:func:`run_simulation` writes ``<study>.csv`` (long format, ``kind`` = measured | theory | spec),
``slopes.csv``, ``claims.csv`` and ``run.json`` (last), atomically; the same config
gives the same CSV bytes (all randomness from seeds derived with ``numpy.random.SeedSequence``).
"""
from __future__ import annotations

import copy
import resource
import sys
import time
import zlib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from jsonschema import Draft202012Validator
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from scipy import stats
from scipy.stats import linregress

from pcl import claims as claim_rule
from pcl.io import atomic_write, write_json
from pcl.results import claims_dict
from pcl.sim.collab_sgd import BiasCorrection, QuadraticOracle, StreamOracle, collab_sgd, mean_se, wga_weights
from pcl.sim.mean_estimation import Family, estimation_table, mc_mse, mse_curve, simulate
from pcl.theory import averaging, wga

__all__ = ["run_simulation", "validate_simulation", "study_defaults", "bc_harmonic_error", "no_floor_in_n",
           "no_floor_in_t", "SPEC"]

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schemas" / "simulation.schema.yaml"
# Tolerances of spec §4.3 (wga-bias-correction.md) and the acceptance list.
SLOPE_TOL, PLATEAU_TOL, REL_TOL_SGD, REL_TOL_AVG, BENEFIT_TOL, MAX_Z = 0.1, 0.1, 0.03, 0.01, 0.03, 4.0
CLAIM_COLUMNS = ["study", "claim", "spec", "theory", "measured", "verdict", "note"]
SLOPE_COLUMNS = ["study", "method", "x", "over", "points", "kind", "slope", "slope_se", "expected"]

# The spec's printed numbers, compared with the closed forms when a study uses the spec's setting.
SPEC = {
    "wga": {  # wga-bias-correction.md §1.5(a)/(b): η = 0.05, σ = 1, ζ = 0.3, uniform weights, BC a = η/(N+1)
        "setting": {"eta": 0.05, "sigma": 1.0, "zeta": 0.3},
        "local": {n: 0.02564 for n in (1, 3, 7, 15, 31)},
        "wga_zeta0": {1: 0.01282, 3: 0.00641, 7: 0.00321, 15: 0.00160, 31: 0.00080},
        "wga_zeta": {1: 0.03532, 3: 0.05704, 7: 0.07211, 15: 0.08070, 31: 0.08526},
        "bc": {1: 0.02521, 3: 0.01183, 7: 0.00604, 15: 0.00308, 31: 0.00156},
        "bc_curved_N31": {1.2: 0.00124, 2.0: 0.00076},  # BC, collaborators' h_i; closed form 0.00131 / 0.00080
    },
    "curve": {  # optimal-model-averaging.md §2.4: Gaussian, Δ = 0.3, n_0 = 10, 90 others, pooled
        "alpha_star": 0.5525, "global": 0.08290,
        "mse": {0.0: 0.1000, 0.25: 0.07825, 0.5: 0.06271, 1.0: 0.05028, 1.5: 0.06271, 2.0: 0.1000},
    },
    "table23": {  # §2.3, 40k replications: Δ -> α*, local, global, oracle, plug-in (oracle at Δ=0.1: exact 0.0174)
        0.0: (1.000, 0.100, 0.010, 0.010, 0.043), 0.1: (0.917, 0.100, 0.018, 0.018, 0.049),
        0.2: (0.735, 0.100, 0.042, 0.034, 0.062), 0.3: (0.552, 0.100, 0.083, 0.0503, 0.081),
        0.5: (0.308, 0.100, 0.213, 0.072, 0.121), 1.0: (0.100, 0.100, 0.822, 0.091, 0.138),
        3.0: (0.012, 0.100, 7.30, 0.099, 0.104),
    },
    "table23_reps": 40_000,
}


# ------------------------------------------------------------------------------------------- validation
@cache
def _schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def study_defaults(study_type: str) -> dict:
    """Defaults of one study type, read from the schema (its single source)."""
    for branch in _schema()["$defs"]["study"]["allOf"]:
        if branch["if"]["properties"]["type"]["const"] == study_type:
            return {k: copy.deepcopy(v["default"]) for k, v in branch["then"]["properties"].items()
                    if isinstance(v, dict) and "default" in v}
    raise ValueError(f"unknown study type {study_type!r}")


def validate_simulation(section) -> dict:
    """Check a ``simulation`` section against the schema and return it with every default filled in.

    Raises ValueError whose message names the offending key path (e.g. ``simulation.studies.speedup``:
    ``'stepz' was unexpected``) or value; also the checks a schema cannot express (Bernoulli means in (0, 1)).
    """
    if not isinstance(section, dict):
        raise ValueError(f"simulation: expected a mapping with 'studies', got {type(section).__name__}")
    errors = sorted(Draft202012Validator(_schema()).iter_errors(section), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"simulation.{'.'.join(map(str, e.absolute_path))}: {e.message}".replace("simulation.:", "simulation:")
                 for e in errors]
        raise ValueError("invalid simulation section:\n  " + "\n  ".join(lines))
    out = {"seed": section.get("seed", 0), "studies": {}}
    for name, study in section["studies"].items():
        resolved = {**study_defaults(study["type"]), **study}
        where = f"simulation.studies.{name}"
        if study["type"] == "averaging_curve":
            for i, fam in enumerate(resolved["families"]):
                _family(fam, f"{where}.families[{i}]", [fam["delta"]])
        elif study["type"] == "alpha_estimation":
            for key, why in (("delta", "the shifts of this study are its 'deltas' list"),
                             ("mu0", "mean_estimation.estimation_table draws the target around 0"),
                             ("reps", "set the study's reps")):
                if key in resolved["family"]:
                    raise ValueError(f"{where}.family.{key}: not accepted here; {why}")
            _family(resolved["family"], f"{where}.family", resolved["deltas"])
        elif study["type"] == "speedup":
            if sum(n >= resolved["plateau_min_N"] for n in resolved["N"]) < 2:
                raise ValueError(f"{where}.N: needs >= 2 values >= plateau_min_N = {resolved['plateau_min_N']} "
                                 f"to fit WGA's plateau slope at large N; got {resolved['N']}")
        elif study["type"] == "horizon":
            late = [t for t in resolved["T"] if t >= resolved["plateau_factor"] * _t_star(resolved)]
            if len(late) < 2:
                raise ValueError(f"{where}.T: needs >= 2 horizons >= plateau_factor·T* = "
                                 f"{resolved['plateau_factor'] * _t_star(resolved):.4g} to fit WGA's plateau slope; "
                                 f"max T is {max(resolved['T'])}")
        out["studies"][name] = resolved
    return out


def _family(spec: dict, where: str, deltas) -> Family:
    """Build the Family of a config entry; bad values (e.g. Bernoulli mean outside (0, 1)) name ``where``."""
    try:
        fam = Family(spec["name"], **{k: spec[k] for k in ("std", "df") if k in spec})
        for delta in deltas:
            fam.variance(spec.get("mu0", 0.0) + delta)
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None
    if spec["name"] != "student_t" and "df" in spec:
        raise ValueError(f"{where}.df: only student_t has degrees of freedom")
    return fam


# ------------------------------------------------------------------------------------------------ runner
def run_simulation(config: dict, out_dir, *, progress: bool | None = None) -> None:
    """Run every study of ``config['simulation']`` and write its tables, slopes, claims and run record.

    ``out_dir`` receives ``<study>.csv`` per study, ``slopes.csv``, ``claims.csv``, ``metrics.json`` (claims that
    hold, measured slopes: for DVC) and, last, ``run.json`` (the
    config with the simulation defaults filled in, seeds, code version, wall time, peak memory). It writes no
    ``config.yaml``: in the workflow that file belongs to the rule that resolves the experiment.
    ``progress``: show a rich progress bar (default: when stderr is a terminal).
    """
    from pcl.run import code_version  # imports torch: only when a run is actually written

    start = time.time()
    section = validate_simulation(config.get("simulation"))
    out_dir = Path(out_dir)
    resolved = {**config, "simulation": section}
    tables, slopes, claims, studies = {}, [], [], {}
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   disable=not (sys.stderr.isatty() if progress is None else progress))
    with bar:
        for name, params in section["studies"].items():
            t0 = time.time()
            seed = params.get("seed", _derive_seed(section["seed"], name))
            result = STUDIES[params["type"]](name, params, seed, lambda jobs, n=name: bar.track(jobs, description=n))
            tables[name] = result.table
            slopes += [{"study": name, **row} for row in result.slopes]
            claims += [{"study": name, **row} for row in result.claims]
            studies[name] = {"type": params["type"], "seed": seed, "wall_time_s": round(time.time() - t0, 3),
                             **result.derived}
    for name, table in tables.items():
        _write_csv(out_dir / f"{name}.csv", table)
    slopes, claims = pd.DataFrame(slopes, columns=SLOPE_COLUMNS), pd.DataFrame(claims, columns=CLAIM_COLUMNS)
    _write_csv(out_dir / "slopes.csv", slopes)
    _write_csv(out_dir / "claims.csv", claims)
    # What `dvc metrics show/diff` compare: the verdict counts, under the federated experiments' keys (one column
    # each over all experiments); the slopes stay in slopes.csv.
    write_json(out_dir / "metrics.json", {"claims": claims_dict(
        {verdict: int((claims["verdict"] == verdict).sum()) for verdict in claim_rule.VERDICTS})})
    write_json(out_dir / "run.json", {
        "experiment": config.get("name"), "kind": "simulation", "config": resolved, "seed": section["seed"],
        "studies": studies, "code": code_version(), "wall_time_s": round(time.time() - start, 3),
        "peak_memory_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)})


@dataclass
class StudyResult:
    table: pd.DataFrame
    slopes: list[dict] = field(default_factory=list)
    claims: list[dict] = field(default_factory=list)
    derived: dict = field(default_factory=dict)


def _derive_seed(base: int, *keys) -> int:
    """A seed for (base, keys...) that does not depend on the order studies or runs are listed in."""
    words = [int(base)] + [zlib.crc32(str(k).encode()) for k in keys]
    return int(np.random.SeedSequence(words).generate_state(1)[0])


def _write_csv(path: Path, table: pd.DataFrame) -> None:
    atomic_write(path, table.to_csv(index=False, lineterminator="\n", float_format="%.10g").encode())


def _claim(claim: str, holds: bool, *, theory: str = "", measured: str = "", spec: str = "", note: str = "") -> dict:
    return {"claim": claim, "spec": spec, "theory": theory, "measured": measured,
            "verdict": "holds" if holds else "fails", "note": note}


def _mc_claim(claim: str, measured, theory, se, rel_tol: float, at: list[str], note: str = "") -> dict:
    """Closed form vs Monte Carlo at several points. Holds where |m − t| ≤ max(rel_tol·t, MAX_Z·SE) at every
    point: the spec's relative tolerance (§4.3), widened only where the MC standard error is too large to judge it
    (e.g. BC at large N, whose EMA correlation time 1/a ∝ N leaves few independent samples)."""
    m, t, se = (np.asarray(v, float) for v in (measured, theory, se))
    gap = np.abs(m - t)
    rel, z = gap / np.abs(t), gap / se
    ok = gap <= np.maximum(rel_tol * np.abs(t), MAX_Z * se)
    i = int(rel.argmax())
    return _claim(claim, bool(ok.all()), theory=f"{_g(t.min())} … {_g(t.max())}",
                  measured=f"max rel. error {rel.max():.2%} ({at[i]}), max |z| {np.max(z):.2f}",
                  note=(f"{note}; " if note else "") + f"tolerance max({rel_tol:.0%}, {MAX_Z:g} SE); "
                       f"MC SE up to {np.max(se / np.abs(t)):.1%}")


def _g(x: float) -> str:
    return f"{x:.4g}"


def _slope(x, y) -> tuple[float, float]:
    """Least-squares slope of log y on log x and its standard error (0 for two points)."""
    x, y = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    if len(x) == 2:
        return float((y[1] - y[0]) / (x[1] - x[0])), 0.0
    fit = linregress(x, y)
    return float(fit.slope), float(fit.stderr)


def _slope_rows(method, x_name, over, x, measured, theory, expected) -> tuple[list[dict], float]:
    m, m_se = _slope(x, measured)
    t, t_se = _slope(x, theory)
    common = {"method": method, "x": x_name, "over": over, "points": len(x), "expected": expected}
    return [{**common, "kind": "measured", "slope": m, "slope_se": m_se},
            {**common, "kind": "theory", "slope": t, "slope_se": t_se}], m


def _matches_printed(value: float, printed: float) -> bool:
    """``value`` rounds to the spec's printed number (half a unit of its last printed digit)."""
    digits = len(repr(float(printed)).split(".")[1])
    return abs(value - printed) <= 0.5 * 10.0 ** -digits + 1e-12


# ---------------------------------------------------------------------------------- experiment 1: speedup
BC_INIT_BATCH = 1000


def _stationary(oracle, p: dict, seed: int, **kw) -> tuple[float, float]:
    res = collab_sgd(oracle, steps=p["steps"], eta=p["eta"], reps=p["reps"], seed=seed,
                     record_every=max(1, p["steps"] // 2000), **kw)
    mean, se = res.stationary(p["tail"])
    return float(mean[0]), float(se[0])


def no_floor_in_n(k, errors, se: float, local: float, local_se: float, floor: float) -> tuple[bool, bool]:
    """"No bias floor" at constant step, for ``errors`` measured at N + 1 = ``k`` (SE ``se`` at the largest N), as two
    checks: (level) at the largest N the error is below WGA's floor and below ``local``'s error by MAX_Z combined SE;
    (slope) the slope is −1 ± SLOPE_TOL. Being below the floor alone proves nothing (local is, at every N): beating
    local shows that the biased collaborators are used without a floor, the slope that the benefit grows with N."""
    errors = np.asarray(errors, float)
    level = errors[-1] < floor and errors[-1] + MAX_Z * np.hypot(se, local_se) < local
    return bool(level), bool(abs(_slope(k, errors)[0] + 1) <= SLOPE_TOL)


def _speedup(name: str, p: dict, seed: int, track) -> StudyResult:
    """Experiment 1: error vs N at constant step η (spec §1.5(a), (b), (d)); BC's form is reconstructed."""
    ns = sorted(p["N"])
    eta, zeta, sigma = p["eta"], p["zeta"], p["sigma"]
    n_max = ns[-1]

    def theory(method: str, n: int, h: float = 1.0) -> float:
        if method == "local":
            return wga.constant_step_variance(eta, sigma)
        if method == "bc":
            return wga.bc_stationary_error(eta, eta / (n + 1), n, sigma=sigma, h=np.r_[1.0, np.full(n, h)])
        b = np.r_[0.0, np.full(n, zeta if method == "wga_zeta" else 0.0)]
        return wga.wga_stationary_error(wga.uniform_weights(n), b, eta=eta, sigma=sigma)

    # Local SGD never looks at the collaborators, so one run (on the target alone) serves every N.
    jobs = [("local", None, 1.0)] + [(m, n, 1.0) for n in ns for m in ("wga_zeta0", "wga_zeta", "bc")] \
        + [("bc", n_max, h) for h in p["bc_curvature"]]
    measured = {}
    for method, n, h in track(jobs):
        run_seed = _derive_seed(seed, method, n, h)
        if method == "local":
            measured[method] = _stationary(QuadraticOracle(np.zeros(1), sigma=sigma), p, run_seed, weights=[1.0])
            continue
        oracle = QuadraticOracle.shifted(n, 0.0 if method == "wga_zeta0" else zeta, delta=h - 1.0, sigma=sigma)
        # BC's c starts from one large-batch estimate (a spec §1.3 option): the EMA's slow transient (time ≈ 1/a,
        # twice that with h_i = 2) would otherwise leak into the stationary average at large N.
        bc = BiasCorrection(eta / (n + 1), c_init_batch=BC_INIT_BATCH) if method == "bc" else None
        measured[(method, n, h)] = _stationary(oracle, p, run_seed, bc=bc)
    local = measured.pop("local")
    measured.update({("local", n, 1.0): local for n in ns})

    rows = []
    for (method, n, h), (mean, se) in sorted(measured.items(), key=lambda kv: (kv[0][2], kv[0][0], kv[0][1])):
        label = method if h == 1.0 else f"bc_h{h:g}"
        rows.append({"method": label, "N": n, "kind": "measured", "error": mean, "se": se})
    for n in range(ns[0], n_max + 1):  # theory on every N in range: smooth lines in the report
        rows += [{"method": m, "N": n, "kind": "theory", "error": theory(m, n), "se": np.nan}
                 for m in ("local", "wga_zeta0", "wga_zeta", "bc")]
        rows.append({"method": "wga_floor", "N": n, "kind": "theory", "error": (zeta * n / (n + 1)) ** 2, "se": np.nan})
    rows += [{"method": f"bc_h{h:g}", "N": n_max, "kind": "theory", "error": theory("bc", n_max, h), "se": np.nan}
             for h in p["bc_curvature"]]
    spec_setting = all(np.isclose(p[k], v) for k, v in SPEC["wga"]["setting"].items())
    for method in ("local", "wga_zeta0", "wga_zeta", "bc"):
        for n in ns:
            value = SPEC["wga"][method].get(n)
            needs_zeta = method in ("wga_zeta", "bc")
            if value is not None and (spec_setting or (not needs_zeta and np.isclose(eta, 0.05) and sigma == 1.0)):
                rows.append({"method": method, "N": n, "kind": "spec", "error": value, "se": np.nan})
    table = pd.DataFrame(rows, columns=["method", "N", "kind", "error", "se"])

    def col(method, h=1.0):
        return np.array([measured[(method, n, h)][0] for n in ns]), np.array([theory(method, n, h) for n in ns])

    k = np.array(ns) + 1
    slopes, claims = [], []
    for method, label in (("wga_zeta0", "WGA ζ=0"), ("bc", "BC (a = η/(N+1))")):
        meas, theo = col(method)
        rows_, s = _slope_rows(method, "N+1", f"N in {ns}", k, meas, theo, -1.0)
        slopes += rows_
        claims.append(_claim(f"{label}: slope of error vs N+1 = −1 ± {SLOPE_TOL} (linear speedup)",
                             abs(s + 1) <= SLOPE_TOL, theory=f"{rows_[1]['slope']:.3f}",
                             measured=f"{s:.3f} ± {rows_[0]['slope_se']:.3f}", spec="−1",
                             note="BC update form reconstructed (spec §1.3 [R])" if method == "bc" else ""))
    meas_l, theo_l = col("local")
    meas_w, theo_w = col("wga_zeta")
    big = [i for i, n in enumerate(ns) if n >= p["plateau_min_N"]]  # >= 2 of them (validate_simulation)
    rows_, s = _slope_rows("wga_zeta", "N+1", f"N >= {p['plateau_min_N']}", k[big], meas_w[big], theo_w[big], 0.0)
    slopes += rows_
    claims.append(_claim(f"WGA ζ={zeta:g}: |slope| < {PLATEAU_TOL} at large N (N ≥ {p['plateau_min_N']}): "
                         "the bias plateau", abs(s) < PLATEAU_TOL, theory=f"{rows_[1]['slope']:.3f}",
                         measured=f"{s:.3f}", spec="→ 0"))
    slopes += _slope_rows("wga_zeta", "N+1", f"N in {ns}", k, meas_w, theo_w, np.nan)[0]

    def where(mask) -> str:
        return ", ".join(str(n) for n, w in zip(ns, mask) if w) or "none"

    claims.append(_claim(f"WGA ζ={zeta:g} is worse than local exactly where the closed form says so",
                         bool(np.array_equal(meas_w > meas_l, theo_w > theo_l)),
                         theory=f"worse at N = {where(theo_w > theo_l)}",
                         measured=f"worse at N = {where(meas_w > meas_l)} "
                                  f"(WGA/local {_g(np.min(meas_w / meas_l))} … {_g(np.max(meas_w / meas_l))})",
                         spec="worse than alone for every N (§1.5(a))" if spec_setting else ""))
    floor = (zeta * n_max / (n_max + 1)) ** 2
    meas_b, theo_b = col("bc")
    se_b, se_l = measured[("bc", n_max, 1.0)][1], measured[("local", n_max, 1.0)][1]
    claims.append(_claim(f"BC has no bias floor: at N={n_max} its error is below WGA's floor (ζN/(N+1))² and below "
                         f"local's by {MAX_Z:g} SE, and it keeps slope −1",
                         all(no_floor_in_n(k, meas_b, se_b, meas_l[-1], se_l, floor)),
                         theory=f"BC {_g(theo_b[-1])} < floor {_g(floor)}, local {_g(theo_l[-1])}",
                         measured=f"BC {_g(meas_b[-1])} ± {_g(se_b)}, local {_g(meas_l[-1])} ± {_g(se_l)}, "
                                  f"slope {_slope(k, meas_b)[0]:.3f}",
                         note="a method that ignores the collaborators (local) fails the first test (below local), one "
                              "with a floor both; BC update form reconstructed (spec §1.3 [R])"))
    ratio, theo_ratio = meas_b / col("wga_zeta0")[0], theo_b / col("wga_zeta0")[1]
    claims.append(_claim("BC (a = η/(N+1)) costs about 2× WGA(ζ=0) (within ±25%)",
                         bool(np.all(np.abs(ratio / 2 - 1) <= 0.25)),
                         theory=f"{_g(theo_ratio.min())} … {_g(theo_ratio.max())}",
                         measured=f"{_g(ratio.min())} … {_g(ratio.max())}", spec="about 2× (§1.5(b))"))
    for method, label in (("local", "local"), ("wga_zeta0", "WGA ζ=0"), ("wga_zeta", f"WGA ζ={zeta:g}"), ("bc", "BC")):
        meas, theo = col(method)
        se = [measured[(method, n, 1.0)][1] for n in ns]
        claims.append(_mc_claim(f"{label}: closed form matches Monte Carlo at every N (R = {p['reps']} seeds)",
                                meas, theo, se, REL_TOL_SGD, [f"N={n}" for n in ns]))
    if spec_setting:
        for method, section in (("wga", "(a)"), ("bc", "(b)")):
            keys = ("local", "wga_zeta0", "wga_zeta") if method == "wga" else ("bc",)
            pairs = [(SPEC["wga"][m][n], theory(m, n)) for m in keys for n in ns if n in SPEC["wga"][m]]
            bad = [f"{s} vs {_g(t)}" for s, t in pairs if not _matches_printed(t, s)]
            claims.append(_claim(f"closed form reproduces the spec's table §1.5{section} to its printed digits",
                                 not bad, spec=f"{len(pairs)} values", theory=f"{len(pairs) - len(bad)} match",
                                 measured="see the spec rows of the table", note="; ".join(bad)))
    base_bc = measured[("bc", n_max, 1.0)][0]
    for h in p["bc_curvature"]:
        mean, se = measured[("bc", n_max, h)]
        closed = theory("bc", n_max, h)
        printed = SPEC["wga"]["bc_curved_N31"].get(h) if spec_setting and n_max == 31 else None
        disagree = printed is not None and not _matches_printed(closed, printed)
        off = {"closed form": abs(mean - closed), "spec": abs(mean - (printed or np.inf))}
        near, far = sorted(off, key=off.get)
        side = (f"sides with the {near}" if off[far] > MAX_Z * se
                else f"cannot tell them apart ({MAX_Z:g} SE = {MAX_Z * se:.5f})")
        claim = _mc_claim(f"BC with collaborator curvature h_i = {h:g} (N={n_max}): no floor, Monte Carlo matches "
                          "the Lyapunov closed form", [mean], [closed], [se], REL_TOL_SGD, [f"h_i={h:g}"],
                          note="; ".join(([f"the spec's {printed} disagrees with the closed form {closed:.5f}; the "
                                           f"Monte Carlo {side}"] if disagree else [])
                                         + [f"h_i = 1 gives {_g(base_bc)} (measured)",
                                            "BC update form reconstructed (spec §1.3 [R])"]))
        claims.append({**claim, "spec": "" if printed is None else f"{printed}", "theory": f"{closed:.5f}",
                       "measured": f"{mean:.5f} ± {se:.5f}"})
    return StudyResult(table, slopes, claims, {"bias_floor_at_max_N": floor})


# ---------------------------------------------------------------------------------- experiment 2: horizon
def bc_harmonic_error(steps: int, n_collab: int, sigma: float = 1.0) -> float:
    """Exact E(x_T − b_0)² of BC with η_t = a_t = α_t = 1/(t+1) on the quadratics of §1.5 (h_i = 1, uniform
    collaborator weights), derived here (the spec gives no closed form for this schedule; BC is reconstructed).

    With d_t = ĝ_t + c_t and c_t the running mean of g_0 − ĝ, T·e_T = −Σ_s [(1 − w_s) ε̂_s + w_s ε_{0,s}] with
    w_s = H_T − H_s (harmonic numbers), so E e_T² = (σ²/T²) Σ_s [w_s² + (1 − w_s)²/N] ≈ (2 + 1/N) σ²/T: slope −1
    and no bias floor, but about twice local's error, since the bias is estimated from the target's own samples.
    """
    if steps < 1 or n_collab < 1:
        raise ValueError(f"steps={steps} and n_collab={n_collab} must be >= 1")
    h = np.cumsum(1.0 / np.arange(1, steps + 1))
    w = h[-1] - np.r_[0.0, h[:-1]]
    return float(sigma**2 / steps**2 * np.sum(w**2 + (1.0 - w) ** 2 / n_collab))


def _t_star(p: dict) -> float:
    """T* = σ²/((N+1)ζ²): WGA's variance σ²/((N+1)T) reaches the bias ζ² (spec §1.2, §1.5(d))."""
    return p["sigma"] ** 2 / ((p["N"] + 1) * p["zeta"] ** 2)


def no_floor_in_t(errors, se, theory, late, floor: float) -> bool:
    """"No bias floor" under η_t = 1/(t+1): over the ``late`` horizons (where WGA has flattened) the error follows the
    method's own ζ-free closed form ``theory`` within max(REL_TOL_SGD, MAX_Z·SE), it ends below WGA's floor and it is
    still falling. A floor would lift the late errors off the ζ-free form; local (a different closed form, 1/(2 + 1/N)
    of BC's) fails the first test too, so the check is specific to the method, unlike "below the floor" alone."""
    errors, se, theory = (np.asarray(v, float) for v in (errors, se, theory))
    late = np.asarray(late, bool)
    gap = np.abs(errors[late] - theory[late])
    follows = np.all(gap <= np.maximum(REL_TOL_SGD * theory[late], MAX_Z * se[late]))
    return bool(follows and errors[-1] < floor and errors[-1] < errors[-2])


def _bc_beats_local(mean: dict, se: dict, theo: dict, ts, n: int) -> dict:
    """The paper's claim for BC (linear speedup without a bias floor) under η_t = a_t = 1/(t+1), decided like every
    claim of pcl.claims: BC − local at the largest T, its 95% interval from the two independent Monte Carlo errors."""
    diff = float(mean["bc"][-1] - mean["local"][-1])
    half = float(stats.norm.ppf(0.975) * np.hypot(se["bc"][-1], se["local"][-1]))
    verdict = claim_rule.verdict("<", 0.0, diff, half)
    ratio = mean["bc"][-1] / mean["local"][-1]
    return {"claim": f"BC (a_t = η_t = 1/(t+1)) beats local at T = {ts[-1]}: the collaborators' speedup survives bias "
                     "correction", "spec": "BC removes the floor and keeps linear speedup (abstract; §1.3 [R])",
            "theory": f"BC/local = {_g(theo['bc'][-1] / theo['local'][-1])} (≈ 2 + 1/N = {_g(2 + 1 / n)})",
            "measured": f"BC/local = {ratio:.3f}; BC − local = {_g(diff)} ± {_g(half)} (95%)", "verdict": verdict,
            "note": ("the reproduction disagrees with the paper here: " if verdict == "fails" else "")
                    + "with a_t = η_t the bias estimate c (the running mean of g_0 − ĝ) carries the target's own "
                      "noise at full weight, so BC's error is ≈ (2 + 1/N)σ²/T (bc_harmonic_error), not "
                      "σ²/((N+1)T); the constant-step BC with a = η/(N+1) (speedup study) does keep the speedup; "
                      "update form and schedule reconstructed"}


HORIZON_CHUNK = 500  # replications per collab_sgd call: errors are kept at every step, [reps, T + 1]


def _horizon(name: str, p: dict, seed: int, track) -> StudyResult:
    """Experiment 2: error vs T with η_t = 1/(t+1) (spec §1.5(c), (d)); BC with a_t = 1/(t+1) (reconstructed)."""
    ts = np.array(sorted(p["T"]))
    n, zeta, sigma, reps = p["N"], p["zeta"], p["sigma"], p["reps"]
    uniform = wga.uniform_weights(n)
    floor = float((uniform[1:].sum() * zeta) ** 2)
    t_star = _t_star(p)
    t_local = t_star * (n + 1) ** 2 / n  # where WGA's floor + variance σ²/((N+1)T) meets local's σ²/T
    late = ts[ts >= p["plateau_factor"] * t_star]  # >= 2 horizons (validate_simulation)

    def theory(method: str, t: int) -> float:
        if method == "local":
            return sigma**2 / t
        if method == "bc":
            return bc_harmonic_error(int(t), n, sigma)
        b = np.r_[0.0, np.full(n, zeta if method == "wga_zeta" else 0.0)]
        return wga.wga_harmonic_error(uniform, b, steps=int(t), sigma=sigma)

    setups = {
        "local": (QuadraticOracle(np.zeros(1), sigma=sigma), {"weights": [1.0]}),
        "wga_zeta0": (QuadraticOracle.shifted(n, 0.0, sigma=sigma), {}),
        "wga_zeta": (QuadraticOracle.shifted(n, zeta, sigma=sigma), {}),
        "bc": (QuadraticOracle.shifted(n, zeta, sigma=sigma), {"bc": BiasCorrection(1.0, a_schedule="harmonic")}),
    }
    chunks = [min(HORIZON_CHUNK, reps - i) for i in range(0, reps, HORIZON_CHUNK)]
    parts: dict[str, list] = {m: [] for m in setups}
    for method, i in track([(m, i) for m in setups for i in range(len(chunks))]):
        oracle, kw = setups[method]
        res = collab_sgd(oracle, steps=int(ts[-1]), eta=1.0, schedule="harmonic", reps=chunks[i],
                         seed=_derive_seed(seed, method, i), **kw)
        parts[method].append(res.errors[:, 0, ts])
    measured = {m: np.concatenate(v) for m, v in parts.items()}  # [reps, len(T)]
    mean, se = (dict(zip(measured, v)) for v in zip(*(mean_se(v) for v in measured.values())))
    theo = {m: np.array([theory(m, t) for t in ts]) for m in setups}

    dense = np.unique(np.r_[ts, np.geomspace(ts[0], ts[-1], 64).round().astype(int)])
    rows = [{"method": m, "T": int(t), "kind": "measured", "error": mean[m][j], "se": se[m][j]}
            for m in setups for j, t in enumerate(ts)]
    rows += [{"method": m, "T": int(t), "kind": "theory", "error": theory(m, t), "se": np.nan}
             for m in setups for t in dense]
    rows += [{"method": "wga_floor", "T": int(t), "kind": "theory", "error": floor, "se": np.nan} for t in dense]
    table = pd.DataFrame(rows, columns=["method", "T", "kind", "error", "se"])

    slopes, claims = [], []
    labels = {"local": "local", "wga_zeta0": "WGA ζ=0", "bc": "BC (a_t = 1/(t+1))"}
    for method, label in labels.items():
        rows_, s = _slope_rows(method, "T", f"T in {ts[0]}..{ts[-1]}", ts, mean[method], theo[method], -1.0)
        slopes += rows_
        claims.append(_claim(f"{label}: slope of error vs T = −1 ± {SLOPE_TOL} with η_t = 1/(t+1)",
                             abs(s + 1) <= SLOPE_TOL, theory=f"{rows_[1]['slope']:.3f}",
                             measured=f"{s:.3f} ± {rows_[0]['slope_se']:.3f}", spec="−1",
                             note="BC update form reconstructed (spec §1.3 [R])" if method == "bc" else ""))
    idx = np.isin(ts, late)
    rows_, s = _slope_rows("wga_zeta", "T", f"T >= {p['plateau_factor']:g}·T* = {p['plateau_factor'] * t_star:.4g}",
                           late, mean["wga_zeta"][idx], theo["wga_zeta"][idx], 0.0)
    slopes += rows_
    claims.append(_claim(f"WGA ζ={zeta:g} flattens once T passes T* = σ²/((N+1)ζ²) = {t_star:.4g}: |slope| < "
                         f"{PLATEAU_TOL} over T ≥ {p['plateau_factor']:g}·T*", abs(s) < PLATEAU_TOL,
                         theory=f"{rows_[1]['slope']:.3f}", measured=f"{s:.3f}", spec="→ 0 (bias floor)"))
    at_floor = _mc_claim(f"WGA ζ={zeta:g} sits at its bias floor: (Σα_iζ_i)² + σ²Σα_i²/T at T = {ts[-1]}",
                         mean["wga_zeta"][-1:], theo["wga_zeta"][-1:], se["wga_zeta"][-1:], REL_TOL_SGD,
                         [f"T={ts[-1]}"])
    claims.append({**at_floor, "spec": f"ζ̄² = {_g(floor)}",
                   "theory": f"{_g(theo['wga_zeta'][-1])} (floor {_g(floor)})"})
    clear = np.abs(ts / t_local - 1) > 0.2  # leave out horizons where the two are within MC noise of each other
    beats = mean["wga_zeta"] < mean["local"]
    claims.append(_claim(f"WGA ζ={zeta:g} beats local exactly while T < (N+1)²/N·T* = {t_local:.4g}",
                         bool(np.all(beats[clear] == (ts[clear] < t_local))),
                         theory=f"beats local for T < {t_local:.4g}",
                         measured="beats local at T = " + ", ".join(str(t) for t in ts[beats]),
                         note="horizons within 20% of the crossover are not judged"))
    on_form = no_floor_in_t(mean["bc"], se["bc"], theo["bc"], idx, floor)
    off_form = np.max(np.abs(mean["bc"][idx] / theo["bc"][idx] - 1))
    claims.append(_claim(f"BC has no bias floor: beyond {p['plateau_factor']:g}·T* (where WGA levels off) its error "
                         f"follows its ζ-free closed form, ends below WGA's floor and is still falling at T = {ts[-1]}",
                         on_form, theory=f"BC {_g(theo['bc'][-1])} < floor {_g(floor)} at T = {ts[-1]}",
                         measured=f"BC {_g(mean['bc'][-1])} ± {_g(se['bc'][-1])}; max rel. error to the closed "
                                  f"form {off_form:.2%} over {idx.sum()} horizons",
                         note=f"closed form within max({REL_TOL_SGD:.0%}, {MAX_Z:g} SE): local's error (1/(2 + 1/N) "
                              "of it) fails this; update form reconstructed"))
    claims.append(_bc_beats_local(mean, se, theo, ts, n))
    claims.append(_mc_claim(f"closed forms match Monte Carlo at every T (R = {reps} seeds)",
                            np.concatenate([mean[m] for m in setups]), np.concatenate([theo[m] for m in setups]),
                            np.concatenate([se[m] for m in setups]), REL_TOL_SGD,
                            [f"{m}, T={t}" for m in setups for t in ts],
                            note="local σ²/T; WGA (Σα_iζ_i)² + σ²Σα_i²/T; BC: bc_harmonic_error"))
    gap = _bridge(p, seed, int(ts[-1]))
    claims.append(_claim("WGA with η_t = 1/(t+1) on ½(x − y_i)² returns the weighted average of per-task sample "
                         "means (exact bridge to model averaging)", gap <= 1e-10, theory="0 (exact)",
                         measured=f"max |x_T − Σα_i ȳ_i| = {gap:.1e}", spec="§1.5(c)"))
    return StudyResult(table, slopes, claims, {"T_star": t_star, "T_local_crossover": t_local, "bias_floor": floor})


def _bridge(p: dict, seed: int, steps: int) -> float:
    """Largest gap between WGA's x_T on streamed Gaussian data and Σα_i ȳ_i (zero up to round-off)."""
    rng = np.random.default_rng(_derive_seed(seed, "bridge"))
    k, reps = p["N"] + 1, p["bridge_reps"]
    means = np.r_[0.0, np.full(p["N"], p["zeta"])]
    data = means[None, :, None] + p["sigma"] * rng.standard_normal((reps, k, steps))
    w = wga_weights(k, "all", beta=0.5)
    res = collab_sgd(StreamOracle(data, means), steps=steps, eta=1.0, schedule="harmonic", reps=reps, seed=0,
                     weights=w, targets="all")
    return float(np.max(np.abs(res.x[..., 0] - data.mean(-1) @ w.T)))


# ------------------------------------------------------------------------- experiment 3: averaging curve
def _family_label(spec: dict, fam: Family) -> str:
    extra = f", ν={fam.df:g}" if fam.name == "student_t" else ""
    return f"{spec['name']} (μ0={spec.get('mu0', 0.0):g}, Δ={spec['delta']:g}{extra})"


def _averaging_curve(name: str, p: dict, seed: int, track) -> StudyResult:
    """Experiment 3: MSE and relative benefit vs α/α* per distribution, Monte Carlo vs closed form (§2.2, §2.4)."""
    ratios = np.array(sorted(p["ratios"]), float)
    dense = np.unique(np.r_[ratios, np.linspace(0.0, ratios.max(), 101)])
    rows, claims, derived = [], [], {}
    worst_benefit, sign_ok, a_mc = [], True, {}
    for i, spec in track(list(enumerate(p["families"]))):
        fam = _family(spec, f"families[{i}]", [spec["delta"]])
        reps = spec.get("reps", p["reps"])
        draws = simulate(fam, delta=spec["delta"], n_local=p["n_local"], n_others=p["n_others"], reps=reps,
                         seed=_derive_seed(seed, i, spec["name"]), mu0=spec.get("mu0", 0.0), pooled=p["pooled"])
        label, a_star, mse_l = _family_label(spec, fam), draws.alpha_star, draws.var_local
        curve = mse_curve(draws, ratios)
        rows += [{"family": label, "ratio": r.ratio, "alpha": r.alpha, "kind": "measured", "mse": r.mse_mc,
                  "se": r.mse_se, "mse_rel": r.mse_mc / mse_l, "benefit": r.benefit_mc, "benefit_se": r.benefit_se}
                 for r in curve.itertuples()]
        rows += [{"family": label, "ratio": r, "alpha": r * a_star, "kind": "theory",
                  "mse": float(draws.theory_mse(r * a_star)), "se": np.nan,
                  "mse_rel": float(draws.theory_mse(r * a_star)) / mse_l,
                  "benefit": float(averaging.relative_benefit(r * a_star, a_star)), "benefit_se": np.nan}
                 for r in dense]
        dev = np.abs(curve.benefit_mc - curve.benefit_theory).to_numpy()
        ok = dev <= np.maximum(BENEFIT_TOL, MAX_Z * curve.benefit_se.to_numpy())
        worst_benefit.append((dev.max(), label, bool(ok.all()), float(np.nanmax(dev / curve.benefit_se))))
        sure = np.abs(curve.benefit_theory) > 0.05
        sign_ok &= bool(np.all(np.sign(curve.benefit_mc[sure]) == np.sign(curve.benefit_theory[sure])))
        centred = draws.local - draws.mu0
        a_mc[label] = float(np.mean(centred * (draws.local - draws.global_model))
                            / np.mean((draws.local - draws.global_model) ** 2))
        derived[label] = {"alpha_star": a_star, "mse_local": mse_l, "alpha_star_mc": a_mc[label]}
        claims.append(_mc_claim(f"{label}: closed-form MSE(α) matches Monte Carlo at every α/α* (R = {reps})",
                                curve.mse_mc, curve.mse_theory, curve.mse_se, REL_TOL_AVG,
                                [f"α/α*={r:g}" for r in curve.ratio], note=f"α* = {a_star:.4g}"))
        if _is_spec_curve(spec, p):
            claims += _spec_curve_claims(draws)
    dev, who, _, _ = max(worst_benefit)
    claims.append(_claim("relative benefit collapses onto 1 − (1 − α/α*)² for every distribution",
                         all(w[2] for w in worst_benefit), theory="1 − (1 − r)²",
                         measured=f"max |deviation| {dev:.4f} ({who}); max |z| {max(w[3] for w in worst_benefit):.2f}",
                         spec="universal parabola (§2.4)",
                         note=f"tolerance max({BENEFIT_TOL}, {MAX_Z:g} SE) at every α/α*, SE by the delta method"))
    claims.append(_claim("benefit > 0 iff 0 < α < 2α*, negative beyond 2α*", sign_ok,
                         theory="sign of r(2 − r)", measured="signs agree" if sign_ok else "signs differ",
                         note="ratios where |1 − (1 − r)²| ≤ 0.05 are not judged"))
    claims.append(_claim("α* > 0 whenever σ_L² > 0 (Monte Carlo α* = E[(L−μ0)(L−G)] / E[(L−G)²])",
                         bool(min(a_mc.values()) > 0),
                         theory=", ".join(f"{d['alpha_star']:.4g}" for d in derived.values()),
                         measured=", ".join(f"{v:.4g}" for v in a_mc.values()),
                         spec="abstract of Grimberg et al. 2021"))
    table = pd.DataFrame(rows, columns=["family", "ratio", "alpha", "kind", "mse", "se", "mse_rel", "benefit",
                                       "benefit_se"])
    return StudyResult(table, [], claims, {"families": derived})


def _is_spec_curve(spec: dict, p: dict) -> bool:
    return (spec["name"] == "gaussian" and np.isclose(spec["delta"], 0.3) and spec.get("mu0", 0.0) == 0.0
            and spec.get("std", 1.0) == 1.0 and p["n_local"] == 10 and p["n_others"] == 90 and p["pooled"])


def _spec_curve_claims(draws) -> list[dict]:
    ref = SPEC["curve"]
    r = np.array(list(ref["mse"]))
    a_star = draws.alpha_star
    theo = np.r_[draws.theory_mse(r * a_star), draws.theory_mse(1.0)]
    printed = np.r_[list(ref["mse"].values()), ref["global"]]
    mc = mc_mse(draws, np.r_[r * a_star, 1.0])[0]
    ok = all(_matches_printed(t, s) for t, s in zip(theo, printed)) and _matches_printed(a_star, ref["alpha_star"])
    rel = np.max(np.abs(mc / theo - 1))
    return [_claim("closed form reproduces the spec's curve check §2.4 (MSE at α/α* = 0…2 and at α = 1, α*)",
                   ok, spec=f"α* {ref['alpha_star']}; " + ", ".join(f"{v:.5g}" for v in printed),
                   theory=f"α* {a_star:.4f}; " + ", ".join(f"{v:.5f}" for v in theo),
                   measured=", ".join(f"{v:.5f}" for v in mc) + f" (max rel. error {rel:.2%})")]


# ------------------------------------------------------------------------ experiment 4: estimating α*
def _pooled_theory(var_l: float, var_o: float, delta, n_local: int, n_others: int, pooled: bool, alpha) -> tuple:
    """(α*, MSE(α)) of the closed forms of §2.2 for the pooled or the independent global model."""
    if pooled:
        w0 = n_local / (n_local + n_others)
        a_star = averaging.alpha_star_pooled(var_l, var_o, delta, w0)
        return a_star, var_l * averaging.mse_ratio_pooled(alpha(a_star), a_star, w0)
    a_star = averaging.alpha_star_independent(var_l, var_o, delta)
    return a_star, var_l * averaging.mse_ratio_independent(alpha(a_star), a_star)


def _alpha_estimation(name: str, p: dict, seed: int, track) -> StudyResult:
    """Experiment 4: local / global / oracle α* / plug-in α̂ across Δ (§2.3); where the plug-in hurts and why."""
    spec = p["family"]
    deltas = sorted(p["deltas"])
    fam = _family(spec, "family", deltas)
    mu0 = 0.0  # estimation_table draws the target's data around μ0 = 0 (validate_simulation refuses mu0)
    var_l = fam.variance(mu0) / p["n_local"]
    choose = {"local": lambda a: 0.0, "global": lambda a: 1.0, "oracle": lambda a: np.minimum(a, 1.0)}

    def theory(method: str, delta: float) -> tuple[float, float]:
        a_star, value = _pooled_theory(var_l, fam.variance(mu0 + delta) / p["n_others"], delta, p["n_local"],
                                       p["n_others"], p["pooled"], choose[method])
        return float(a_star), float(value)

    parts = [estimation_table(fam, [d], n_local=p["n_local"], n_others=p["n_others"], reps=p["reps"],
                              seed=_derive_seed(seed, d), pooled=p["pooled"]) for d in track(deltas)]
    est = pd.concat(parts, ignore_index=True)
    methods = ("local", "global", "oracle", "plugin")
    rows = [{"delta": r["delta"], "alpha_star": r["alpha_star"], "plugin_outside": r["plugin_outside"], "method": m,
             "kind": "measured", "mse": r[m], "se": r[f"{m}_se"]} for r in est.to_dict("records") for m in methods]
    dense = np.unique(np.r_[deltas, np.linspace(deltas[0], deltas[-1], 101)])
    rows += [{"delta": d, "alpha_star": theory("local", d)[0], "plugin_outside": np.nan, "method": m,
              "kind": "theory", "mse": theory(m, d)[1], "se": np.nan} for d in dense for m in choose]
    spec_setting = (spec["name"] == "gaussian" and mu0 == 0.0 and spec.get("std", 1.0) == 1.0 and p["pooled"]
                    and p["n_local"] == 10 and p["n_others"] == 90)
    table23 = SPEC["table23"] if spec_setting else {}
    for d in deltas:
        if d in table23:
            rows += [{"delta": d, "alpha_star": table23[d][0], "plugin_outside": np.nan, "method": m, "kind": "spec",
                      "mse": v, "se": np.nan} for m, v in zip(methods, table23[d][1:])]
    table = pd.DataFrame(rows, columns=["delta", "alpha_star", "plugin_outside", "method", "kind", "mse", "se"])

    claims = []
    a_stars = est["alpha_star"].to_numpy()
    claims.append(_claim("α* > 0 whenever σ_L² > 0, at every Δ", bool(np.all(a_stars > 0)),
                         theory=f"min α* = {a_stars.min():.4g} (σ_L² = {var_l:.4g})",
                         measured=f"{len(deltas)} shifts Δ = {deltas[0]:g} … {deltas[-1]:g}",
                         spec="abstract of Grimberg et al. 2021"))
    claims.append(_claim("the oracle weight α* never does worse than local", bool(np.all(est.oracle < est.local)),
                         theory="MSE(α*) = MSE_L − α*²E[(L−G)²] < MSE_L",
                         measured=f"max oracle/local = {np.max(est.oracle / est.local):.4f}"))
    hurts = est.plugin > est.local
    often = est.plugin_outside > p["outside_threshold"]
    hurt_d = [f"{d:g}" for d in est.delta[hurts]]
    claims.append(_claim("the plug-in α̂ is worse than local exactly where α̂ ∉ (0, 2α*) in a sizeable share of draws",
                         bool(np.all(hurts == often)),
                         theory="relative benefit 1 − (1 − α/α*)² < 0 outside (0, 2α*)",
                         measured=f"worse than local at Δ = {', '.join(hurt_d) or 'none'}; α̂ ∉ (0, 2α*) in > "
                                  f"{p['outside_threshold']:.0%} of draws at Δ = "
                                  + (", ".join(f"{d:g}" for d in est.delta[often]) or "none"),
                         note="share outside (0, 2α*) per Δ: "
                              + ", ".join(f"{r.delta:g}: {r.plugin_outside:.1%}" for r in est.itertuples())))
    big = [f"{d:g}" for d in deltas if d**2 > var_l]
    claims.append(_claim("the plug-in is worse than local when Δ² ≳ σ_L²", hurt_d == big,
                         theory=f"Δ² > σ_L² = {var_l:.4g} at Δ = {', '.join(big) or 'none'}",
                         measured=f"worse than local at Δ = {', '.join(hurt_d) or 'none'}",
                         spec="plug-in worse than local at Δ = 0.5, 1.0 (bold in §2.3)" if spec_setting else ""))
    recs = [(r, m) for r in est.to_dict("records") for m in choose]
    claims.append(_mc_claim(f"closed forms (local, global, oracle) match Monte Carlo at every Δ (R = {p['reps']})",
                            [r[m] for r, m in recs], [theory(m, r["delta"])[1] for r, m in recs],
                            [r[f"{m}_se"] for r, m in recs], REL_TOL_SGD, [f"{m}, Δ={r['delta']:g}" for r, m in recs],
                            note="§2.2, pooled global model" if p["pooled"] else "§2.2, independent global model"))
    if table23:
        claims += _table23_claims(est, deltas, theory, p["reps"])
    return StudyResult(table, [], claims, {"var_local": var_l})


def _table23_claims(est: pd.DataFrame, deltas, theory, reps: int) -> list[dict]:
    """The spec's §2.3 table: closed-form columns to the printed digits, the plug-in column within MC error."""
    claims, bad = [], []
    spec_reps = SPEC["table23_reps"]
    for r in est.to_dict("records"):
        d = r["delta"]
        if d not in SPEC["table23"]:
            continue
        a_printed, *printed = SPEC["table23"][d]
        for col, value in (("α*", a_printed),) + tuple(zip(("local", "global", "oracle"), printed[:3])):
            closed = theory("local", d)[0] if col == "α*" else theory(col, d)[1]
            if not _matches_printed(closed, value):
                bad.append((d, col, value, closed, np.nan if col == "α*" else r[col]))
    matched = [d for d in deltas if d in SPEC["table23"]]
    sides = [bool(np.isfinite(m) and abs(m - t) < abs(m - v)) for _, _, v, t, m in bad]
    claims.append(_claim("closed form reproduces the spec's table §2.3 (α*, local, global, oracle) to its printed "
                         "digits, except the spec's misprints (where the Monte Carlo sides with the closed form)",
                         all(sides), spec=f"Δ = {', '.join(f'{d:g}' for d in matched)}",
                         theory=f"{4 * len(matched) - len(bad)} of {4 * len(matched)} match",
                         measured="see the spec rows of the table",
                         note="; ".join(f"Δ={d:g} {c}: spec {v} vs closed form {t:.4f} (Monte Carlo {m:.4f})"
                                        for d, c, v, t, m in bad)))
    for (d, col, value, closed, mc), side in zip(bad, sides):
        claims.append(_claim(f"Δ={d:g} {col}: the Monte Carlo agrees with the closed form, not with the spec's "
                             "printed value", side and abs(mc / closed - 1) <= REL_TOL_SGD, spec=f"{value}",
                             theory=f"{closed:.4f}", measured=f"{mc:.4f}",
                             note="the spec's number disagrees with the closed form"))
    z = []
    for r in est.to_dict("records"):
        if r["delta"] in SPEC["table23"]:
            printed = SPEC["table23"][r["delta"]][4]
            se = r["plugin_se"] * np.sqrt(1 + reps / spec_reps)  # ours and the spec's 40k-draw error
            z.append(abs(r["plugin"] - printed) / max(se, 1e-12) if abs(r["plugin"] - printed)
                     > 0.5 * 10.0 ** -len(repr(printed).split(".")[1]) else 0.0)
    claims.append(_claim(f"the plug-in column of §2.3 is reproduced within {MAX_Z:g} standard errors (ours and the "
                         "spec's 40k draws, beyond half a printed digit)", max(z) <= MAX_Z,
                         spec=", ".join(f"{SPEC['table23'][d][4]}" for d in matched), theory="no closed form",
                         measured=", ".join(f"{v:.4f}" for v in est.plugin[est.delta.isin(matched)])
                         + f" (max |z| {max(z):.2f})"))
    return claims


STUDIES = {"speedup": _speedup, "horizon": _horizon, "averaging_curve": _averaging_curve,
           "alpha_estimation": _alpha_estimation}
