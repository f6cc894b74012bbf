"""Reports: papermill runs an experiment's report notebook, nbconvert makes it one self-contained HTML."""
import json

# nbconvert's command for every report.html (rules report and benchmark_report): code hidden, Markdown images
# inlined like the figures, and a template that loads nothing from a CDN (no require.js, MathJax, Mermaid), so
# the file opens offline; a TeX formula would show as its source (the reports write Unicode symbols instead).
NBCONVERT_HTML = ("jupyter nbconvert --to html --no-input --embed-images"
                  " --template-file workflow/templates/report.html.j2")


rule report:
    """reports/<scale>/<exp>/report.ipynb (executed), report.html (code hidden, figures inline), figures/*.png|svg and
    claims.csv (the claims table). The notebook is the experiment's `report.notebook`, else the generic one."""
    input:
        unpack(report_inputs),
    output:
        notebook=f"{REPORTS}/{{exp}}/report.ipynb",
        html=report(f"{REPORTS}/{{exp}}/report.html", category="Reports", labels={"experiment": "{exp}"}),
        claims=f"{REPORTS}/{{exp}}/claims.csv",
        figures=directory(f"{REPORTS}/{{exp}}/figures"),
    params:
        nbconvert=NBCONVERT_HTML,
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
    conda:
        CONDA_ENV
    resources:
        mem_mb=1000,
        runtime=15,
    shell:
        "papermill {input.notebook:q} {output.notebook:q} --kernel python3 --cwd . --no-progress-bar"
        " -y {params.notebook:q} > {log:q} 2>&1"
        " && {params.nbconvert} --output-dir $(dirname {output.html:q})"
        " --output report {output.notebook:q} >> {log:q} 2>&1"
