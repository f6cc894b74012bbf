"""Decentralized bilevel optimization: the Hyper-Gradient Push estimator and its central references."""
from pcl.bilevel.hgp import (
    APPENDIX_SETTINGS,
    check_reverse_links,
    default_alpha_beta,
    error_vs_depth,
    expected_sgp,
    hgp,
    implicit_hypergradient,
    outer_gradients,
    outer_objective,
    sampled_mixing,
    toy_logistic,
)

__all__ = ["APPENDIX_SETTINGS", "check_reverse_links", "default_alpha_beta", "error_vs_depth", "expected_sgp", "hgp",
           "implicit_hypergradient", "outer_gradients", "outer_objective", "sampled_mixing", "toy_logistic"]
