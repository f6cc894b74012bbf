"""Fast entry points: `pcl list` and config validation import no torch (lazy registries), and report.html files
load nothing from a CDN.

The torch checks run in a fresh interpreter: this one has torch already (conftest)."""
from __future__ import annotations

import ast
import base64
import json
import re
import shlex
import subprocess
import sys
import textwrap
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest
import yaml
from typer.testing import CliRunner

import pcl.algorithms.base as base
from pcl.algorithms import ALGORITHMS
from pcl.cli import app
from pcl.data.sources import SOURCES
from pcl.models import MODELS
from pcl.registry import Registry

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "sklearn", "scipy", "pandas")


def _fresh(code: str) -> dict:
    """Run ``code`` in a new interpreter; it prints a JSON object, returned with ``heavy``: the heavy modules it
    ended up importing."""
    script = textwrap.dedent(code) + textwrap.dedent(f"""
        import json as _json, sys as _sys
        print(_json.dumps({{**RESULT, "heavy": [m for m in {HEAVY!r} if m in _sys.modules]}}))
    """)
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.splitlines()[-1])


# ------------------------------------------------------------------------------------------------- pcl list
def test_list_imports_nothing_heavy_and_lists_what_the_modules_register():
    got = _fresh("""
        from typer.testing import CliRunner
        from pcl.cli import app
        res = CliRunner().invoke(app, ["list"])
        RESULT = {"out": res.output, "code": res.exit_code}
    """)
    assert got["code"] == 0 and got["heavy"] == []
    # what the registries hold once every entry is imported (this interpreter): the names the classes register
    expected = ["algorithms: " + ", ".join(sorted(cls.name for cls in ALGORITHMS.values())),
                "models: " + ", ".join(sorted(MODELS)), "sources: " + ", ".join(sorted(SOURCES))]
    assert got["out"].splitlines() == expected


# ------------------------------------------------------------------------------------------------ validation
def _experiment(tmp_path: Path, name: str, **changes) -> str:
    cfg = yaml.safe_load((ROOT / "workflow/config/experiments/digits_dirichlet.yaml").read_text())
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**cfg, **changes}))
    return str(path)


def test_validation_without_torch_up_to_the_hyperparameters(tmp_path):
    """Schema, algorithm names and simulations are checked without torch; hyperparameters import only the named
    algorithms' modules, and their errors still name the key."""
    configs = {
        "simulation": str(ROOT / "workflow/config/experiments/wga_bc.yaml"),
        "schema": _experiment(tmp_path, "schema", modle={"name": "mlp"}),
        "name": _experiment(tmp_path, "name", algorithms={"fedavgg": {"default": {}}}),
        "hparams": _experiment(tmp_path, "hparams", algorithms={"fedprox": {"default": {"mu": -1, "lrr": 0.1}}}),
    }
    got = {what: _fresh(f"""
        import sys
        from pcl.config import ConfigError, load_experiment
        try:
            load_experiment({path!r})
            RESULT = {{"error": None}}
        except ConfigError as err:
            RESULT = {{"error": str(err)}}
        RESULT["modules"] = sorted(m for m in sys.modules  # the algorithms' modules (hparams.py is torch-free)
                                   if m.startswith("pcl.algorithms.") and m != "pcl.algorithms.hparams")
    """) for what, path in configs.items()}
    for what in ("simulation", "schema", "name"):
        assert got[what]["heavy"] == [] and got[what]["modules"] == [], what
    assert got["simulation"]["error"] is None
    assert "modle" in got["schema"]["error"]
    assert "unknown algorithm(s) ['fedavgg']" in got["name"]["error"]
    err = got["hparams"]["error"]
    assert "algorithms.fedprox.default: mu=-1" in err and "lrr: unknown hyperparameter" in err
    assert "pcl.algorithms.fedprox" in got["hparams"]["modules"]
    assert "pcl.algorithms.wga" not in got["hparams"]["modules"]  # only the algorithms the config names


def test_a_passed_hyperparameter_check_is_remembered_until_the_settings_or_the_code_change(tmp_path, monkeypatch):
    """The second validation of the same settings under the same code imports no torch; an edited value, a failing
    check or other code are checked again."""
    monkeypatch.setenv("PCL_CACHE_DIR", str(tmp_path / "cache"))
    markers = lambda: sorted((tmp_path / "cache").rglob("*"))  # noqa: E731
    valid = _experiment(tmp_path, "valid", algorithms={"fedprox": {"default": {"mu": 0.1}}})
    edited = _experiment(tmp_path, "edited", algorithms={"fedprox": {"default": {"mu": 0.2}}})
    bad = _experiment(tmp_path, "bad", algorithms={"fedprox": {"default": {"mu": -1}}})

    def validate(path: str) -> dict:
        return _fresh(f"""
            import sys
            from pcl.config import ConfigError, load_experiment
            try:
                load_experiment({path!r})
                RESULT = {{"error": None}}
            except ConfigError as err:
                RESULT = {{"error": str(err)}}
            RESULT["modules"] = [m for m in sys.modules if m.startswith("pcl.algorithms.") and m != "pcl.algorithms.hparams"]
        """)

    first, second, other = validate(valid), validate(valid), validate(edited)
    assert "torch" in first["heavy"] and "pcl.algorithms.fedprox" in first["modules"]
    assert second == {"error": None, "modules": [], "heavy": []}
    assert "pcl.algorithms.fedprox" in other["modules"]
    assert len(markers()) == 3  # the folder and one marker per passed settings
    for _ in range(2):  # a failure is never remembered: it is found again, by the check
        assert "mu=-1" in validate(bad)["error"]
    assert len(markers()) == 3

    from pcl import config
    monkeypatch.setattr(config, "_code_digest", lambda: b"other code")
    assert config._passed_marker({"fedprox": {"default": {"mu": 0.1}}}) not in markers()
    assert config._passed_marker({"nonexistent": {"default": {}}}) is None  # not pcl's: never remembered


# -------------------------------------------------------------------------------------------------- registry
def test_every_registered_algorithm_has_its_registry_line():
    """A module without a registry line would never be imported, so its algorithm would be unknown to configs."""
    decorated = {m for f in (ROOT / "pcl/algorithms").glob("*.py")
                 for m in re.findall(r'^@register\("([^"]+)"\)', f.read_text(), re.M)}
    assert decorated <= set(ALGORITHMS)
    for name in ALGORITHMS:
        assert ALGORITHMS[name].name == name
    assert all(isinstance(MODELS[name], type) for name in MODELS)
    assert all(callable(SOURCES[name]) for name in SOURCES)


@pytest.fixture
def lazy_module(tmp_path, monkeypatch):
    """A module ``entry_points_lazy`` (class ``Thing``) on sys.path, not imported yet."""
    (tmp_path / "entry_points_lazy.py").write_text("class Thing:\n    pass\n\n\nclass Other:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "entry_points_lazy"
    sys.modules.pop("entry_points_lazy", None)


def test_registry_imports_an_entry_on_first_use(lazy_module):
    reg = Registry("thing", {"thing": f"{lazy_module}:Thing"})
    assert "thing" in reg and "other" not in reg and list(reg) == ["thing"] and len(reg) == 1 and sorted(reg)
    assert lazy_module not in sys.modules
    assert reg["thing"] is sys.modules[lazy_module].Thing
    with pytest.raises(KeyError):
        reg["other"]


def test_registry_line_and_module_must_agree(lazy_module, monkeypatch):
    reg = Registry("algorithm", {"thing": f"{lazy_module}:Thing"})
    monkeypatch.setattr(base, "ALGORITHMS", reg)  # what @register adds to
    mod = __import__(lazy_module)
    with pytest.raises(ValueError, match=f"registry line names {lazy_module}:Thing, not {lazy_module}:Other"):
        base.register("thing")(mod.Other)
    base.register("thing")(mod.Thing)
    assert reg["thing"] is mod.Thing and mod.Thing.name == "thing"
    with pytest.raises(ValueError, match="registered twice"):
        base.register("thing")(mod.Thing)
    base.register("plugin")(mod.Other)  # no registry line: a module loaded as a plugin registers itself
    assert list(reg) == ["thing", "plugin"] and reg["plugin"] is mod.Other


# ---------------------------------------------------------------------------------------------------- --help
def test_help_shows_no_value_for_flags():
    for args in (["--help"], ["train", "--help"]):
        out = CliRunner().invoke(app, args, terminal_width=200).output
        assert "--help" in out and "<bool>" not in out, out


# ------------------------------------------------------------------------------------------------ HTML reports
def _nbconvert_command() -> str:
    """NBCONVERT_HTML of workflow/rules/report.smk, the one nbconvert command both report rules use."""
    text = (ROOT / "workflow/rules/report.smk").read_text()
    (node,) = [n for n in ast.parse(text[:text.index("\nrule ")]).body
               if isinstance(n, ast.Assign) and n.targets[0].id == "NBCONVERT_HTML"]
    return ast.literal_eval(node.value)


def test_both_report_rules_use_the_one_nbconvert_command():
    for rules in ("report.smk", "benchmark.smk"):
        text = (ROOT / "workflow/rules" / rules).read_text()
        assert "nbconvert=NBCONVERT_HTML," in text and " && {params.nbconvert} --output-dir" in text, rules
        assert text.count("jupyter nbconvert") == (rules == "report.smk"), rules  # defined once, in report.smk


class _External(HTMLParser):
    """Every URL a browser would fetch from another host: src/href of script, link, img, iframe, and URLs inside
    inline scripts (dynamic imports)."""

    def __init__(self) -> None:
        super().__init__()
        self.found, self._in_script = [], False

    def handle_starttag(self, tag, attrs):
        self._in_script = tag == "script"
        for key, value in attrs:
            if tag in ("script", "link", "img", "iframe") and key in ("src", "href") and re.match(
                    r"(https?:)?//", value or ""):
                self.found.append(f"<{tag} {key}={value}>")

    def handle_endtag(self, tag):
        self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.found += re.findall(r"https?://\S+", data)


def test_report_html_is_self_contained(tmp_path):
    png = b"\x89PNG\r\n\x1a\n" + bytes(16)  # only embedded, never decoded
    (tmp_path / "fig.png").write_bytes(png)
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# Gains\nThe mean gain $\\Delta = \\bar a - b$.\n\n![figure](fig.png)"),
        nbformat.v4.new_code_cell("secret_code()", outputs=[nbformat.v4.new_output(
            "display_data", data={"image/png": base64.b64encode(png).decode()})])])
    nbformat.write(nb, tmp_path / "report.ipynb")
    cmd = shlex.split(_nbconvert_command()) + ["--output-dir", str(tmp_path / "html"), "--output", "report",
                                               str(tmp_path / "report.ipynb")]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)  # as the rule runs it
    assert res.returncode == 0, res.stderr
    html = (tmp_path / "html/report.html").read_text()
    parser = _External()
    parser.feed(html)
    assert parser.found == []
    assert html.count('src="data:image/png;base64,') == 2  # the Markdown image inlined too
    assert "secret_code" not in html  # --no-input
    assert "$\\Delta = \\bar a - b$" in html  # without MathJax a formula reads as its TeX source
