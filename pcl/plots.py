"""Figures shared by the CLI and the report notebooks (seaborn on the headless Agg backend)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import seaborn as sns  # noqa: E402


def save_figure(fig, folder: str | Path, name: str, dpi: int = 110) -> None:
    """Show ``fig`` in a report notebook and keep it as ``folder/name.png`` and ``.svg``, byte-stable: no dates or
    software tags in the files (set ``plt.rcParams["svg.hashsalt"]`` for fixed SVG ids); then close it."""
    from IPython.display import Image, display

    fig.tight_layout()
    png = Path(folder) / f"{name}.png"
    fig.savefig(png, dpi=dpi, metadata={"Software": None})
    fig.savefig(Path(folder) / f"{name}.svg", metadata={"Date": None, "Creator": None})
    # the saved PNG itself: displaying the Figure gives only its text repr when matplotlib runs without the inline
    # backend (as under papermill with Agg), and the report would show "<Figure size ...>" instead of the plot
    display(Image(filename=str(png)))
    plt.close(fig)


def client_counts(stats: dict, out: str | Path) -> None:
    """The federation at a glance, from its stats.json: a client x class heatmap of training samples for
    classification, or training samples per client for regression (no classes)."""
    if not stats.get("num_classes"):
        sizes = [c["sizes"]["train"] for c in stats["clients"]]
        fig, ax = plt.subplots(figsize=(min(12, 2 + 0.2 * len(sizes)), 3))
        ax.bar(range(len(sizes)), sizes)
        ax.set_xlabel("client")
        ax.set_ylabel("training samples")
        ax.set_title(f"{stats.get('source', '')}: {len(sizes)} clients")
        fig.tight_layout()
        fig.savefig(out, dpi=100, metadata={"Software": None})
        plt.close(fig)
        return
    counts = np.asarray([c["class_counts"]["train"] for c in stats["clients"]])
    fig, ax = plt.subplots(figsize=(min(12, 2 + 0.5 * counts.shape[1]), min(14, 1.5 + 0.18 * counts.shape[0])))
    sns.heatmap(counts, ax=ax, cmap="viridis", cbar_kws={"label": "training samples"},
                yticklabels=max(1, counts.shape[0] // 25))
    ax.set_xlabel("class")
    ax.set_ylabel("client")
    ax.set_title(f"{stats.get('source', '')}: {counts.shape[0]} clients")
    fig.tight_layout()
    fig.savefig(out, dpi=100, metadata={"Software": None})
    plt.close(fig)
