"""Local training of many clients at once, on any per-client ``Objective``: vectorized or the plain reference loop.

Both backends run the same pure one-client step (``make_step``: the objective's ``torch.func.grad``, a functional
optimizer update, the exact proximal maps) on the same ``BatchPlan``, so they agree to float tolerance and are both
differentiable end to end (tests/test_engine.py): a hypergradient through local steps works whichever ran.

* ``vectorized`` vmaps the step over clients. It computes only real client-steps: clients are ordered by their step
  count, and at step s only the prefix that still has a batch is computed (no padded, masked steps). Clients are
  processed in chunks sized from a memory budget, so 1,000 clients of a CNN fit in a bounded working set.
* ``loop`` runs the same step client by client: the reference the vectorized path is tested against, and on a CPU
  the faster backend for convolutional models (vmap of a convolution batches nothing there; benchmarks/cnn.py).
* ``auto`` picks by that measurement (``default_backend``): the loop for convolution-heavy models on a CPU,
  vectorized otherwise.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import grad, vmap
from torch.utils._pytree import tree_leaves, tree_map

from pcl.data.types import ClientData
from pcl.engine.batches import make_plan
from pcl.engine.objective import Extras, Objective
from pcl.engine.optim import OPTIMIZERS
from pcl.engine.stack import Params

BACKENDS = ("auto", "vectorized", "loop")


@dataclass
class LocalSpec:
    """How one call of local training runs: step size, batch size, length (epochs or steps), optimizer, and whether
    an epoch drops its last partial batch (PyTorch DataLoader's drop_last, as PFLlib trains)."""

    lr: float
    batch_size: int
    local_epochs: float | None = 1.0
    local_steps: int | None = None
    optimizer: str = "sgd"
    weight_decay: float = 0.0
    drop_last: bool = False

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer: unknown {self.optimizer!r}; choose one of {sorted(OPTIMIZERS)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")

    def plan(self, n: torch.Tensor, generator: torch.Generator):
        epochs = self.local_epochs if self.local_steps is None else None
        return make_plan(n, self.batch_size, epochs, self.local_steps, generator, self.drop_last)


CONV_MACS_FOR_LOOP = 1_000_000


def default_backend(model: nn.Module, input_shape: tuple[int, ...], device: torch.device | str = "cpu") -> str:
    """The measured faster backend. On a CPU, a vmapped convolution over clients batches nothing, so a model whose
    convolutions cost >= ``CONV_MACS_FOR_LOOP`` multiply-adds per sample trains faster client by client (PFLlib's
    MNIST CNN, 4.2 M: the loop is 1.2x the vectorized path, benchmarks/cnn.py); small models are dominated by
    per-call overhead, which vmap removes (the 8x8 CNN, 20 K: vectorized is ~10x the loop, benchmarks/engine.py).
    On a GPU batching is what pays: always vectorized."""
    if torch.device(device).type != "cpu":
        return "vectorized"
    _, macs = _forward_stats(model, torch.zeros(1, *input_shape))
    return "loop" if macs >= CONV_MACS_FOR_LOOP else "vectorized"


def _forward_stats(model: nn.Module, sample: torch.Tensor) -> tuple[int, int]:
    """One hooked forward pass of the template model on one sample (on the CPU, where the template lives): the numbers
    its leaf modules output, and the multiply-adds of its convolutions."""
    outputs, macs = [0], [0]

    def count(module, _inputs, output):
        outputs[0] += output[0].numel()
        if isinstance(module, nn.modules.conv._ConvNd):
            macs[0] += output[0].numel() * module.weight[0].numel()  # per output element: in_channels/groups x kernel

    hooks = [m.register_forward_hook(count) for m in model.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            model(sample.cpu().to(next(model.parameters()).dtype))
    finally:
        for h in hooks:
            h.remove()
    return outputs[0], macs[0]


def make_step(model: nn.Module, objective: Objective, optimizer, lrs: dict[str, float]) -> Callable:
    """The pure one-client step ``(trained, frozen, state, x, y, extras, t) -> (trained, state)``.

    Pure in all its tensor arguments, so it composes with ``torch.func.vmap``/``grad``/``vjp`` and autograd."""
    gradient = grad(lambda p, f, x, y, e: objective.value(model, p, f, x, y, e))

    def step(trained: Params, frozen: Params, state: dict, x: torch.Tensor, y: torch.Tensor, extras: Extras, t: int):
        g = gradient(trained, frozen, x, y, extras)
        trained, state = optimizer.update(trained, g, state, lrs, t)
        return objective.after_step(trained, extras, lrs), state
    return step


def _tracks_gradients(*trees) -> bool:
    """Whether any tensor carries autograd history or sits inside a torch.func transform."""
    leaves = [t for tree in trees for t in tree_leaves(tree) if isinstance(t, torch.Tensor)]
    return any(t.requires_grad or torch._C._functorch.is_functorch_wrapped_tensor(t) for t in leaves)


def _rows(tree, idx):
    return tree_map(lambda v: v[idx], tree)


class LocalTrainer:
    """Trains the rows of a stacked parameter set on their clients' data (see the module docstring)."""

    def __init__(self, model: nn.Module, backend: str = "vectorized", memory_mb: float = 512.0,
                 device: torch.device | str = "cpu", input_shape: tuple[int, ...] | None = None) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"train.engine: unknown backend {backend!r}; choose one of {BACKENDS}")
        if backend == "auto":
            if input_shape is None:
                raise ValueError("LocalTrainer: backend 'auto' needs the input_shape to measure the model")
            backend = default_backend(model, input_shape, device)
        self.model = model
        self.backend = backend
        self.memory_mb = memory_mb
        self._activations: int | None = None

    def train(self, params: Params, data: ClientData, clients: torch.Tensor, spec: LocalSpec, *,
              generator: torch.Generator, objective: Objective | None = None, trainable: list[str] | None = None,
              extras: Extras | None = None, lrs: dict[str, float] | None = None) -> Params:
        """Run ``spec``'s local steps of ``objective`` for each row of ``params`` (row j = client ``clients[j]``).

        ``trainable``: the parameter names that move (None = all); ``extras``: per-client tensors ``[m, ...]`` the
        objective reads; ``lrs``: per-parameter step sizes (default ``spec.lr`` for all)."""
        clients = torch.as_tensor(clients, dtype=torch.long)
        if len(clients) == 0:
            return params
        objective = objective or Objective()
        plan = spec.plan(data.n[clients].cpu(), generator)
        names = list(params) if trainable is None else list(trainable)
        trained = {n: params[n] for n in names}
        frozen = {n: v for n, v in params.items() if n not in trained}
        lrs = {n: (lrs or {}).get(n, spec.lr) for n in names}
        optimizer = OPTIMIZERS[spec.optimizer](spec.weight_decay)
        step = make_step(self.model, objective, optimizer, lrs)
        run = self._vectorized if self.backend == "vectorized" else self._loop
        out = run(step, optimizer, trained, frozen, dict(extras or {}), data, clients, plan, spec.batch_size)
        return {n: out.get(n, v) for n, v in params.items()}

    def _vectorized(self, step, optimizer, trained, frozen, extras, data, clients, plan, batch):
        counts = plan.active.sum(0)
        order = torch.argsort(counts, descending=True, stable=True)
        vstep = vmap(step, in_dims=(0, 0, 0, 0, 0, 0, None))
        chunk = self._chunk_size(trained, frozen, batch, data)
        parts = []
        whole = chunk >= len(order) and torch.equal(order, torch.arange(len(order)))  # nothing to reorder or split
        for lo in range(0, len(order), chunk):
            sel = order[lo:lo + chunk]
            p, f, e = (trained, frozen, extras) if whole else (_rows(trained, sel), _rows(frozen, sel), _rows(extras, sel))
            state, rows, todo = optimizer.init(p), clients[sel].to(data.x.device), counts[sel]
            for s in range(int(todo[0])):
                a = int((todo > s).sum())  # the clients still training form a prefix
                idx = plan.index[s, sel[:a]].to(data.x.device)
                x, y = data.x[rows[:a, None], idx], data.y[rows[:a, None], idx]
                if a == len(sel):
                    p, state = vstep(p, f, state, x, y, e, s + 1)
                else:
                    head, state_head = vstep(_rows(p, slice(a)), _rows(f, slice(a)), _rows(state, slice(a)), x, y,
                                             _rows(e, slice(a)), s + 1)
                    join = lambda new, old: torch.cat([new, old[a:]])  # noqa: E731
                    p, state = tree_map(join, head, p), tree_map(join, state_head, state)
            parts.append(p)
        if whole:
            return parts[0]
        inverse = torch.argsort(order)
        return {n: torch.cat([q[n] for q in parts])[inverse] for n in trained}

    def _loop(self, step, optimizer, trained, frozen, extras, data, clients, plan, batch):
        """Reference path: one client at a time through the same pure step, no vmap, chunks or ordering.

        Results go straight into one preallocated stack unless a gradient flows through them (a hypergradient):
        then they are kept and stacked, which autograd and torch.func can differentiate."""
        differentiable = _tracks_gradients(trained, frozen, extras)
        out = {n: [] if differentiable else torch.empty_like(v, memory_format=torch.contiguous_format)
               for n, v in trained.items()}
        for j, c in enumerate(clients.tolist()):
            p, f, e = _rows(trained, j), _rows(frozen, j), _rows(extras, j)
            state = optimizer.init(p)
            for s in range(int(plan.active[:, j].sum())):
                idx = plan.index[s, j].to(data.x.device)
                p, state = step(p, f, state, data.x[c, idx], data.y[c, idx], e, s + 1)
            for n in out:
                if differentiable:
                    out[n].append(p[n])
                else:
                    out[n][j] = p[n]
        return {n: torch.stack(v) for n, v in out.items()} if differentiable else out

    def _chunk_size(self, trained: Params, frozen: Params, batch: int, data: ClientData) -> int:
        """Clients per vectorized chunk so that the working set stays within ``memory_mb``: per client, the
        parameters with their gradient, optimizer state and step temporaries (~6 copies of the trained ones), plus
        the activations of a batch kept for the backward pass (~3x the forward outputs)."""
        bytes_per = next(iter(trained.values())).element_size()
        per_param = 6 * sum(v[0].numel() for v in trained.values()) + sum(v[0].numel() for v in frozen.values())
        per_client = bytes_per * (per_param + 3 * batch * self._activation_numel(data))
        return max(1, int(self.memory_mb * 2**20 // max(per_client, 1)))

    def _activation_numel(self, data: ClientData) -> int:
        """Numbers the model's modules output for one sample (measured once by a forward pass with hooks)."""
        if self._activations is None:
            outputs, _ = _forward_stats(self.model, data.x[0, :1])
            self._activations = 2 * outputs  # functional ops (relu, pooling) between modules
        return self._activations

