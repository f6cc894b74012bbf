"""One file per algorithm; importing it registers it. Add a new algorithm with one line here."""
from pcl.algorithms.base import ALGORITHMS, Algorithm, LocalSGD, make_hparams, register
from pcl.algorithms.context import Context
from pcl.algorithms import local, fedavg, fedavg_ft, ditto, fedprox  # noqa: F401,E402  (registration)
from pcl.algorithms import wga  # noqa: F401,E402
from pcl.algorithms import bias_correction  # noqa: F401,E402
from pcl.algorithms import model_averaging  # noqa: F401,E402

__all__ = ["ALGORITHMS", "Algorithm", "Context", "LocalSGD", "make_hparams", "register"]
