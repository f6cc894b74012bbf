"""The algorithm registry: one line per algorithm, ``name: "module:class"``; the module (which imports torch) is
imported when its entry is first used, so the names alone cost nothing. Add an algorithm with one file (its class
decorated ``@register("name")``) and one line here."""
import importlib

from pcl.registry import Registry

ALGORITHMS = Registry("algorithm", {
    # baselines
    "local": "pcl.algorithms.local:Local",
    "fedavg": "pcl.algorithms.fedavg:FedAvg",
    "fedavg_ft": "pcl.algorithms.fedavg_ft:FedAvgFT",
    "ditto": "pcl.algorithms.ditto:Ditto",
    "fedprox": "pcl.algorithms.fedprox:FedProx",
    # lines 1 and 3
    "wga": "pcl.algorithms.wga:WGA",
    "bias_correction": "pcl.algorithms.bias_correction:BiasCorrection",
    "model_averaging": "pcl.algorithms.model_averaging:ModelAveraging",
    # line 2 (DAC)
    "dac": "pcl.algorithms.dac:DAC",
    "dac_var": "pcl.algorithms.dac:DACVar",
    "random_gossip": "pcl.algorithms.random_gossip:RandomGossip",
    "oracle_gossip": "pcl.algorithms.oracle_gossip:OracleGossip",
    "pens": "pcl.algorithms.pens:PENS",
    # line 4
    "fedsim": "pcl.algorithms.fedsim:FedSim",
    "fedalt": "pcl.algorithms.fedalt:FedAlt",
    "pfedme": "pcl.algorithms.pfedme:PFedMe",
    "fedper": "pcl.algorithms.fedper:FedPer",
    "fedrep": "pcl.algorithms.fedrep:FedRep",
    "lg_fedavg": "pcl.algorithms.lg_fedavg:LGFedAvg",
    # line 5
    "sgp": "pcl.algorithms.sgp:SGP",
    "pdbo": "pcl.algorithms.pdbo:PDBO",
    # clustering and mixtures
    "ifca": "pcl.algorithms.ifca:IFCA",
    "cfl": "pcl.algorithms.cfl:CFL",
    "fedem": "pcl.algorithms.fedem:FedEM",
    # baseline zoo
    "scaffold": "pcl.algorithms.scaffold:Scaffold",
    "apfl": "pcl.algorithms.apfl:APFL",
    "perfedavg": "pcl.algorithms.perfedavg:PerFedAvg",
    "fedbn": "pcl.algorithms.fedbn:FedBN",
})

# what algorithms are written against; these import torch, so only when first used (PEP 562)
_BASE = {"Algorithm": "base", "LocalSGD": "base", "make_hparams": "base", "register": "base", "Context": "context"}
__all__ = ["ALGORITHMS", *_BASE]


def __getattr__(name: str):
    if name in _BASE:
        return getattr(importlib.import_module(f"pcl.algorithms.{_BASE[name]}"), name)
    raise AttributeError(f"module 'pcl.algorithms' has no attribute {name!r}")
