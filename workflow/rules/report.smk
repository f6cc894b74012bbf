"""Reports: papermill runs an experiment's report notebook, nbconvert makes it one self-contained HTML."""
import json


def report_inputs(w) -> dict:
    """What the notebook reads: results tables and federation stats, or a simulation's tables."""
    exp = experiment(w.exp)
    results = f"{RESULTS}/{w.exp}"
    common = {"notebook": exp.get("report", {}).get("notebook", config["report_notebook"]),
              "config": f"{results}/config.yaml"}
    if exp["kind"] == "simulation":
        return {**common, "run": f"{results}/run.json", "claims": f"{results}/claims.csv"}
    also = [f"{RESULTS}/{other}/{f}" for other in exp.get("report", {}).get("also", [])
            for f in ("config.yaml", "summary.csv", "runs.csv")]  # e.g. the same method on other networks
    return {**common, "summary": f"{results}/summary.csv", "runs": f"{results}/runs.csv",
            "clients": f"{results}/clients.csv", "stats": f"{federation_dir(w.exp)}/stats.json", "also": also}


rule report:
    """reports/<exp>/report.ipynb (executed), report.html (code hidden, figures inline), figures/*.png|svg and
    claims.csv (the claims table). The notebook is the experiment's `report.notebook`, else the generic one."""
    input:
        unpack(report_inputs),
    output:
        notebook=f"{REPORTS}/{{exp}}/report.ipynb",
        html=report(f"{REPORTS}/{{exp}}/report.html", category="Reports", labels={"experiment": "{exp}"}),
        claims=f"{REPORTS}/{{exp}}/claims.csv",
        figures=directory(f"{REPORTS}/{{exp}}/figures"),
    params:
        # The notebook's parameters cell, as papermill's YAML (-y): experiment, config_path, results_dir,
        # federation_dir (empty for simulations), figures_dir, claims_path, scale.
        notebook=lambda w, input, output: json.dumps({
            "experiment": w.exp, "config_path": input.config, "results_dir": f"{RESULTS}/{w.exp}",
            "federation_dir": federation_dir(w.exp) if experiment(w.exp)["kind"] == "federated" else "",
            "figures_dir": output.figures, "claims_path": output.claims, "scale": config["scale"]}),
    log:
        f"{LOGS}/{{exp}}/report.log",
    wildcard_constraints:
        exp=r"(?!benchmark/)[A-Za-z0-9_.-]+",  # reports/benchmark/ is rule benchmark_report's
    threads: 1
    resources:
        mem_mb=1000,
        runtime=15,
    shell:
        THREADS_ENV + " papermill {input.notebook:q} {output.notebook:q} --kernel python3 --cwd . --no-progress-bar"
        " -y {params.notebook:q} > {log:q} 2>&1"
        " && jupyter nbconvert --to html --no-input --output-dir $(dirname {output.html:q})"
        " --output report {output.notebook:q} >> {log:q} 2>&1"
