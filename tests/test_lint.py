"""`snakemake --lint`, the community's checks of a workflow's style: it reports nothing for ours.

Each test lints a copy of the workflow (test_pipeline.make_workflow) with the repository's default experiment
set: linting parses the workflow, which loads those experiments, and leaves a .snakemake/ folder behind.
"""
from __future__ import annotations

from pathlib import Path

import yaml

from test_pipeline import REPO, make_workflow, snakemake

DEFAULT_EXPERIMENTS = yaml.safe_load((REPO / "workflow/config/config.yaml").read_text())["experiments"]


def lint(root: Path):
    """snakemake --lint in ``root``: exit status 1 and one "Lints for ..." section per linted item when it finds
    anything, status 0 and no section when it finds nothing."""
    proc = snakemake(root, "--lint", check=False)
    return proc.returncode, proc.stdout + proc.stderr


def test_workflow_is_lint_clean(tmp_path):
    status, out = lint(make_workflow(tmp_path, *DEFAULT_EXPERIMENTS))
    assert "Lints for" not in out and status == 0, out


def test_lint_catches_a_planted_lint(tmp_path):
    """The check above can fail: a rule that loses its log directive is reported, by name."""
    root = make_workflow(tmp_path, *DEFAULT_EXPERIMENTS)
    rules = root / "workflow/rules/data.smk"
    text = rules.read_text()
    log = '    log:\n        f"{LOGS}/federation_config/{{fed}}.log",\n'
    assert text.count(log) == 1
    rules.write_text(text.replace(log, "").replace(" 2> {log:q}", "", 1))
    status, out = lint(root)
    assert status != 0
    assert "Lints for rule federation_config" in out and "No log directive defined" in out, out
    assert out.count("Lints for") == 1, out  # the planted lint is the only one
