"""Data: download the real data sets, then partition each data spec into a federation (ARCHITECTURE.md flow)."""


rule download:
    """One pinned file of a real data set, fetched by pooch and checked against its SHA-256 (pcl.data.download).

    Set PCL_DATA_MIRROR to fetch from a mirror with the cache's layout instead of the official URLs.
    Offline sources (digits, synthetic) have no pinned files, so no job of this rule runs for them.
    """
    output:
        f"{RAW}/{{dataset}}/{{file}}",
    params:
        data_root=lambda w, output: os.path.dirname(os.path.dirname(output[0])),  # <data root>/<dataset>/<file>
    log:
        f"{LOGS}/download/{{dataset}}/{{file}}.log",
    threads: 1
    conda:
        CONDA_ENV
    resources:
        mem_mb=500,
        runtime=30,
    shell:
        "pcl fetch {wildcards.dataset} {wildcards.file} --data-root {params.data_root} > {log:q} 2>&1"


rule federation_config:
    """The config `pcl partition` reads: the smallest valid experiment around this data spec.

    `pcl partition` reads only its `data`; the rest is the schema's minimum. Being a function of the data
    spec alone, it changes (and the federation is rebuilt) exactly when the data spec does.
    """
    output:
        f"{DATA}/federations/{{fed}}/partition.yaml",
    params:
        text=lambda w: yaml.safe_dump(partition_config(w.fed), sort_keys=False),
    log:
        f"{LOGS}/federation_config/{{fed}}.log",
    localrule: True
    conda:
        CONDA_ENV
    shell:
        "printf '%s' {params.text:q} > {output:q} 2> {log:q}"


rule partition:
    """One federation per data spec: per-client index arrays for train/val/test, stats and a counts figure."""
    input:
        config=f"{DATA}/federations/{{fed}}/partition.yaml",
        raw=lambda w: raw_files(data_spec(w.fed)),
    output:
        federation=f"{DATA}/federations/{{fed}}/federation.npz",
        stats=f"{DATA}/federations/{{fed}}/stats.json",
        counts=report(f"{DATA}/federations/{{fed}}/counts.png", category="Federations"),
    params:
        data_root=RAW,
    log:
        f"{LOGS}/partition/{{fed}}.log",
    threads: 1
    conda:
        CONDA_ENV
    resources:
        mem_mb=2000,
        runtime=30,
    shell:
        "pcl partition {input.config:q} $(dirname {output.federation:q}) --data-root {params.data_root}"
        " > {log:q} 2>&1"
