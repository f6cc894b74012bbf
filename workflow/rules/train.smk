"""Results: one train job per (experiment, algorithm, setting), training all its seeds, and one summary per
federated experiment; one `pcl simulate` job per simulation experiment (closed forms + Monte Carlo)."""


rule experiment_config:
    """The resolved experiment (scale applied, defaults filled): what reports and simulations read."""
    output:
        f"{RESULTS}/{{exp}}/config.yaml",
    params:
        text=lambda w: yaml.safe_dump(experiment(w.exp), sort_keys=False),
    log:
        f"{LOGS}/{{exp}}/experiment_config.log",
    localrule: True
    conda:
        CONDA_ENV
    shell:
        "printf '%s' {params.text:q} > {output:q} 2> {log:q}"


rule setting_config:
    """One train job's config (see setting_config in common.smk); each run's run.json records it too."""
    output:
        f"{RESULTS}/{{exp}}/configs/{{alg}}/{{setting}}.yaml",
    params:
        text=lambda w: yaml.safe_dump(setting_config(w.exp, w.alg, w.setting), sort_keys=False),
    log:
        f"{LOGS}/{{exp}}/configs/{{alg}}/{{setting}}.log",
    wildcard_constraints:
        exp=experiments_of_kind("federated"),
    localrule: True
    conda:
        CONDA_ENV
    shell:
        "printf '%s' {params.text:q} > {output:q} 2> {log:q}"


rule train:
    """Train one algorithm/setting for every seed, in one process (start-up costs more than a small run), into
    <setting>/seed=<s>/{metrics.csv,diagnostics.csv,model.pt,run.json}, each written atomically at its run's end.

    pcl checkpoints every `train.checkpoint_every` rounds into results/<scale>/<exp>/checkpoints/ (outside the job's output
    folder, which Snakemake removes before it reruns a job), so a killed job resumes its current seed; seeds it had
    finished are trained again. A setting with `init_from: <algorithm>/<setting>` starts from that setting's model.pt
    of the same seed (its final shared model).
    """
    input:
        config=f"{RESULTS}/{{exp}}/configs/{{alg}}/{{setting}}.yaml",
        federation=lambda w: f"{federation_dir(w.exp)}/federation.npz",
        init=init_inputs,
    output:
        runs=directory(f"{RESULTS}/{{exp}}/{{alg}}/{{setting}}"),
    params:
        checkpoints=lambda w: f"{RESULTS}/{w.exp}/checkpoints/{w.alg}/{w.setting}",
        data_root=RAW,
    log:
        f"{LOGS}/{{exp}}/train/{{alg}}/{{setting}}.log",
    wildcard_constraints:
        exp=experiments_of_kind("federated"),
    threads: 1
    conda:
        CONDA_ENV
    resources:
        mem_mb=train_mem_mb,  # estimated from the run's size (pcl.resources); --set-resources overrides it
        runtime=60,
        gpu=lambda w: train_gpus(w.exp),  # the SLURM plugin turns gpu=1 into `sbatch --gpus=1`; 0 adds nothing
    shell:
        "pcl train {input.config:q} {input.federation:q} {output.runs:q} --all-seeds"
        " --checkpoint-dir {params.checkpoints:q} --algorithm {wildcards.alg} --setting {wildcards.setting}"
        " --threads {threads} --data-root {params.data_root} --no-progress > {log:q} 2>&1"


rule aggregate:
    """Per experiment: clients.csv, runs.csv, summary.csv (mean and 95% CI over seeds), metrics.json (DVC) and
    diagnostics.csv (every run's per-round diagnostics)."""
    input:
        runs=lambda w: [setting_dir(w.exp, *s) for s in settings(w.exp)],
        config=f"{RESULTS}/{{exp}}/config.yaml",  # its claims: metrics.json counts their verdicts
    output:
        summary=f"{RESULTS}/{{exp}}/summary.csv",
        runs=f"{RESULTS}/{{exp}}/runs.csv",
        clients=f"{RESULTS}/{{exp}}/clients.csv",
        metrics=f"{RESULTS}/{{exp}}/metrics.json",
        diagnostics=f"{RESULTS}/{{exp}}/diagnostics.csv",
    params:
        runs=lambda w: [run_dir(w.exp, *run) for run in runs(w.exp)],
    log:
        f"{LOGS}/{{exp}}/aggregate.log",
    wildcard_constraints:
        exp=experiments_of_kind("federated"),
    threads: 1
    conda:
        CONDA_ENV
    resources:
        mem_mb=1000,
        runtime=15,
    shell:
        "pcl summarize {params.runs:q} --out $(dirname {output.summary:q}) --config {input.config:q} > {log:q} 2>&1"


rule simulate:
    """A simulation experiment: one CSV per study, slopes.csv, claims.csv, metrics.json (DVC), run.json (last)."""
    input:
        config=f"{RESULTS}/{{exp}}/config.yaml",
    output:
        run=f"{RESULTS}/{{exp}}/run.json",
        metrics=f"{RESULTS}/{{exp}}/metrics.json",
        claims=f"{RESULTS}/{{exp}}/claims.csv",
        slopes=f"{RESULTS}/{{exp}}/slopes.csv",
    log:
        f"{LOGS}/{{exp}}/simulate.log",
    wildcard_constraints:
        exp=experiments_of_kind("simulation"),
    threads: 1
    conda:
        CONDA_ENV
    resources:
        mem_mb=2000,
        runtime=60,
    shell:
        "pcl simulate {input.config:q} $(dirname {output.run:q}) > {log:q} 2>&1"
