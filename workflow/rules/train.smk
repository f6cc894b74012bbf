"""Results: one train job per (experiment, algorithm, setting, seed) and one summary per federated experiment;
one `pcl simulate` job per simulation experiment (closed forms + Monte Carlo, issue 4)."""


rule experiment_config:
    """The resolved experiment (scale applied, defaults filled): what reports and simulations read."""
    output:
        f"{RESULTS}/{{exp}}/config.yaml",
    params:
        text=lambda w: yaml.safe_dump(experiment(w.exp), sort_keys=False),
    localrule: True
    shell:
        "printf '%s' {params.text:q} > {output:q}"


rule run_config:
    """One run's config (see run_config in common.smk), next to its results."""
    output:
        f"{RESULTS}/{{exp}}/{{alg}}/{{setting}}/seed={{seed}}/config.yaml",
    params:
        text=lambda w: yaml.safe_dump(run_config(w.exp, w.alg, w.setting, w.seed), sort_keys=False),
    wildcard_constraints:
        exp=experiments_of_kind("federated"),
    localrule: True
    shell:
        "printf '%s' {params.text:q} > {output:q}"


rule train:
    """Train one algorithm/setting/seed; pcl writes metrics.csv and run.json atomically at the end.

    pcl checkpoints every `train.checkpoint_every` rounds into the run folder, so a killed job resumes. A setting
    with `init_from: <algorithm>/<setting>` starts from that run's model.pt (its final shared model).
    """
    input:
        config=f"{RESULTS}/{{exp}}/{{alg}}/{{setting}}/seed={{seed}}/config.yaml",
        federation=lambda w: f"{federation_dir(w.exp)}/federation.npz",
        init=init_inputs,
    output:
        metrics=f"{RESULTS}/{{exp}}/{{alg}}/{{setting}}/seed={{seed}}/metrics.csv",
        model=f"{RESULTS}/{{exp}}/{{alg}}/{{setting}}/seed={{seed}}/model.pt",
        run=f"{RESULTS}/{{exp}}/{{alg}}/{{setting}}/seed={{seed}}/run.json",
        diagnostics=f"{RESULTS}/{{exp}}/{{alg}}/{{setting}}/seed={{seed}}/diagnostics.csv",
    log:
        f"{LOGS}/{{exp}}/train/{{alg}}/{{setting}}/seed={{seed}}.log",
    wildcard_constraints:
        exp=experiments_of_kind("federated"),
    threads: 1
    resources:
        mem_mb=train_mem_mb,  # estimated from the run's size (pcl.resources); --set-resources overrides it
        runtime=60,
        gpu=lambda w: train_gpus(w.exp),  # the SLURM plugin turns gpu=1 into `sbatch --gpus=1`; 0 adds nothing
    shell:
        THREADS_ENV + " pcl train {input.config:q} {input.federation:q} $(dirname {output.run:q})"
        " --algorithm {wildcards.alg} --setting {wildcards.setting} --seed {wildcards.seed}"
        " --threads {threads} --data-root " + RAW + " --no-progress > {log:q} 2>&1"


rule aggregate:
    """Per experiment: clients.csv, runs.csv, summary.csv (mean and 95% CI over seeds), metrics.json (DVC) and
    diagnostics.csv (every run's per-round diagnostics)."""
    input:
        runs=lambda w: [f"{run_dir(w.exp, *run)}/{f}" for run in runs(w.exp) for f in ("metrics.csv", "run.json")],
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
    resources:
        mem_mb=1000,
        runtime=15,
    shell:
        THREADS_ENV + " pcl summarize {params.runs:q} --out $(dirname {output.summary:q}) --config {input.config:q} > {log:q} 2>&1"


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
    resources:
        mem_mb=2000,
        runtime=60,
    shell:
        THREADS_ENV + " pcl simulate {input.config:q} $(dirname {output.run:q}) > {log:q} 2>&1"
