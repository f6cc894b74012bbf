"""One file per algorithm; importing it registers it. Add a new algorithm with one line here."""
from pcl.algorithms.base import ALGORITHMS, Algorithm, LocalSGD, make_hparams, register
from pcl.algorithms.context import Context

__all__ = ["ALGORITHMS", "Algorithm", "Context", "LocalSGD", "make_hparams", "register"]

# registration (E402: after the base classes they subclass)
from pcl.algorithms import local, fedavg, fedavg_ft, ditto, fedprox  # noqa: F401,E402  baselines
from pcl.algorithms import wga, bias_correction, model_averaging  # noqa: F401,E402  lines 1 and 3
from pcl.algorithms import dac, random_gossip, oracle_gossip, pens  # noqa: F401,E402  line 2 (DAC)
from pcl.algorithms import fedsim, fedalt, pfedme, fedper, fedrep, lg_fedavg  # noqa: F401,E402  line 4
from pcl.algorithms import sgp, pdbo  # noqa: F401,E402  line 5
from pcl.algorithms import ifca, cfl, fedem  # noqa: F401,E402  clustering and mixtures
from pcl.algorithms import scaffold, apfl, perfedavg, fedbn  # noqa: F401,E402  baseline zoo
