"""The personalization benchmark table (issue 11): every method x partition x seed, one table and one report.

    snakemake --cores 8 benchmark                         # the table at small scale (offline digits)
    snakemake --cores 2 benchmark --config scale=tiny experiments='[benchmark_dir0.5,benchmark_rotation]'
    snakemake --profile workflow/profiles/slurm benchmark --config scale=paper

Each partition is one federated experiment, ``<experiments_dir>/benchmark_<partition>.yaml``, trained and
aggregated by the ordinary train/aggregate rules (results/<exp>/{summary,runs,clients}.csv). This rule only reads
those tables and each run's metrics.csv: pcl.benchmark picks each method's configuration on validation and the
notebook renders the table.

The table covers the benchmark experiments named in ``experiments`` (the run's experiment list), or every
benchmark file when that list names none: the default run builds all of them, and a run at a scale the default
experiments lack (``tiny``) names its benchmark experiments there, since common.smk loads that list up front.

Cost: a train job takes 7-11 CPU seconds at small and tiny scale alike (mostly start-up: imports, engine set-up),
so the job count decides: small = 22 methods x 3 configurations x 3 seeds x 6 partitions = 1188 jobs (~3.3
CPU-hours); tiny = 792 jobs (~1.9 CPU-hours), or 264 for two partitions (CI).
"""
import json


def _benchmark_experiments() -> list[str]:
    found = sorted(name for name in KINDS if name.startswith("benchmark_"))
    named = [name for name in config["experiments"] if name in found]
    return named or found


BENCHMARK = _benchmark_experiments()

# Load (and so validate) them up front, as common.smk does for the default set: a train/partition job of a
# benchmark experiment then finds its data spec in any Snakemake process (SLURM jobs re-parse the workflow).
for _name in BENCHMARK:
    experiment(_name)

rule benchmark:
    """Target: the benchmark report, reports/benchmark/report.html."""
    input:
        f"{REPORTS}/benchmark/report.html",
    localrule: True


rule benchmark_report:
    """reports/benchmark/{report.ipynb,report.html,table.csv,ranks.csv,figures/} from the benchmark experiments'
    summarized results (notebooks/benchmark.ipynb, executed by papermill, then one self-contained HTML)."""
    input:
        notebook="notebooks/benchmark.ipynb",
        tables=[f"{RESULTS}/{exp}/{table}" for exp in BENCHMARK
                for table in ("config.yaml", "summary.csv", "runs.csv", "clients.csv")],
        # pcl.benchmark reads each run's validation scores there (runs.csv has test statistics only)
        metrics=[f"{run_dir(exp, *run)}/metrics.csv" for exp in BENCHMARK for run in runs(exp)],
    output:
        notebook=f"{REPORTS}/benchmark/report.ipynb",
        html=report(f"{REPORTS}/benchmark/report.html", category="Reports", labels={"experiment": "benchmark"}),
        table=f"{REPORTS}/benchmark/table.csv",
        ranks=f"{REPORTS}/benchmark/ranks.csv",
        figures=directory(f"{REPORTS}/benchmark/figures"),
    params:
        # The notebook's parameters cell (papermill -y): experiments, results_dir, out_dir, figures_dir.
        notebook=lambda w, output: json.dumps({
            "experiments": BENCHMARK, "results_dir": RESULTS, "out_dir": os.path.dirname(output.table),
            "figures_dir": output.figures}),
    log:
        f"{LOGS}/benchmark/report.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    shell:
        THREADS_ENV + " papermill {input.notebook:q} {output.notebook:q} --kernel python3 --cwd . --no-progress-bar"
        " -y {params.notebook:q} > {log:q} 2>&1"
        " && jupyter nbconvert --to html --no-input --output-dir $(dirname {output.html:q})"
        " --output report {output.notebook:q} >> {log:q} 2>&1"
