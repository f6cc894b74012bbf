"""The pcl workflow: download -> partition -> train (experiment x algorithm x setting x seed) -> aggregate -> report.

    snakemake --cores 8                                    # reports of the default experiments (config.yaml)
    snakemake --cores 8 reports/small/<experiment>/report.html   # one experiment
    snakemake --profile workflow/profiles/slurm            # the same on a SLURM cluster
    snakemake --cores 8 benchmark                          # the personalization benchmark table (reports/<scale>/benchmark/)
    snakemake -n / --dag | dot -Tsvg > dag.svg             # what would run

The top-level config (workflow/config/config.yaml, schema workflow/schemas/config.schema.yaml) picks the
experiments and the scale; each experiment is a YAML file under workflow/config/experiments/.
"""
import os
import sys

from snakemake.utils import min_version, validate

min_version("9.0")

configfile: "workflow/config/config.yaml"


validate(config, "workflow/schemas/config.schema.yaml")

# Jobs call `pcl`, `papermill` and `jupyter`: take them from the environment that runs Snakemake, even when
# it was started as /path/to/venv/bin/snakemake without activating the venv (with `--software-deployment-method
# conda`, each job's env from workflow/envs/ comes first on its PATH instead).
envvars:
    "PATH",


os.environ["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/benchmark.smk"


rule all:
    """Default target: the HTML report of every experiment of the default set."""
    input:
        expand(f"{REPORTS}/{{exp}}/report.html", exp=config["experiments"]),
    default_target: True
    localrule: True


rule federations:
    """Every federation of the default set (the DVC `federations` stage builds this)."""
    input:
        sorted({f"{federation_dir(name)}/federation.npz" for name in config["experiments"]
                if experiment(name)["kind"] == "federated"}),
    localrule: True
