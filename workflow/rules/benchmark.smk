"""The personalization benchmark table: every method x partition x seed, one table and one report.

    snakemake --cores 8 benchmark                         # the table at small scale (offline digits)
    snakemake --cores 2 benchmark --config scale=tiny experiments='[benchmark_dir0.5,benchmark_rotation]'
    snakemake --profile workflow/profiles/slurm benchmark --config scale=paper

Each partition is one federated experiment, ``<experiments_dir>/benchmark_<partition>.yaml``, trained and
aggregated by the ordinary train/aggregate rules (results/<scale>/<exp>/{summary,runs,clients}.csv). This rule only reads
those tables and each run's metrics.csv: pcl.benchmark picks each method's configuration on validation and the
notebook renders the table.

The table covers the benchmark experiments named in ``experiments`` (the run's experiment list), or every
benchmark file when that list names none: the default run builds all of them, and a run at a scale the default
experiments lack (``tiny``) names its benchmark experiments there, since common.smk loads that list up front.

Cost: one train job per (partition, method, configuration) trains all seeds in one process (start-up, ~3 s,
costs more than a run at these sizes): small = 6 x 66 = 396 jobs of 3 seeds; tiny on two partitions (CI) = 132
jobs of 2 seeds.
"""
import json


BENCHMARK = _benchmark_experiments()

# Load (and so validate) them up front, as common.smk does for the default set: a train/partition job of a
# benchmark experiment then finds its data spec in any Snakemake process (SLURM jobs re-parse the workflow).
for _name in BENCHMARK:
    experiment(_name)

rule benchmark:
    """Target: the benchmark report, reports/<scale>/benchmark/report.html."""
    input:
        f"{REPORTS}/benchmark/report.html",
    localrule: True


rule benchmark_report:
    """reports/<scale>/benchmark/{report.ipynb,report.html,table.csv,ranks.csv,figures/} from the benchmark experiments'
    summarized results (notebooks/benchmark.ipynb, executed by papermill, then one self-contained HTML)."""
    input:
        notebook="notebooks/benchmark.ipynb",
        tables=[f"{RESULTS}/{exp}/{table}" for exp in BENCHMARK
                for table in ("config.yaml", "summary.csv", "runs.csv", "clients.csv")],
        # pcl.benchmark reads each run's validation scores there (runs.csv has test statistics only)
        runs=[setting_dir(exp, *s) for exp in BENCHMARK for s in settings(exp)],
    output:
        notebook=f"{REPORTS}/benchmark/report.ipynb",
        html=report(f"{REPORTS}/benchmark/report.html", category="Reports", labels={"experiment": "benchmark"}),
        table=f"{REPORTS}/benchmark/table.csv",
        ranks=f"{REPORTS}/benchmark/ranks.csv",
        figures=directory(f"{REPORTS}/benchmark/figures"),
    params:
        nbconvert=NBCONVERT_HTML,
        # The notebook's parameters cell (papermill -y): experiments, results_dir, out_dir, figures_dir.
        notebook=lambda w, output: json.dumps({
            "experiments": BENCHMARK, "results_dir": RESULTS, "out_dir": os.path.dirname(output.table),
            "figures_dir": output.figures}),
    log:
        f"{LOGS}/benchmark/report.log",
    threads: 1
    conda:
        CONDA_ENV
    resources:
        mem_mb=2000,
        runtime=15,
    shell:
        "papermill {input.notebook:q} {output.notebook:q} --kernel python3 --cwd . --no-progress-bar"
        " -y {params.notebook:q} > {log:q} 2>&1"
        " && {params.nbconvert} --output-dir $(dirname {output.html:q})"
        " --output report {output.notebook:q} >> {log:q} 2>&1"
