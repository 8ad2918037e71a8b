"""Magnitude rules: how large a revived weight is, given its retained sign.

Row statistics come from each row's (output neuron's) surviving non-zero weights:
mu_r, sigma_r = mean and std of those weights, rowmax_r = max |w| of them (a fully pruned
row uses the statistics of the whole layer's surviving weights).

- ``neuron-max`` (the paper's Neuron-Max Scaling): sign * max(|N(mu_r, sigma_r)|,
  rowmax_r * (1 + 1e-6)) -- in effect just above the row's largest surviving magnitude.
- ``sample``: sign * |N(mu_r, sigma_r)|.
- ``mean``: sign * mean_r |w|.
- ``completed``: sign * |estimate| (the completion's own magnitude).

Every rule has the signature ``rule(w, surviving, rows, cols, signs, estimate, generator)``
and returns float32 magnitudes-with-sign for the kept positions (rows[i], cols[i]) only;
`signs` and `estimate` are given at those positions too. Gaussian draws come from the
(CPU) `generator`, one per kept position in row-major order, so results do not depend on
the device.
"""
from __future__ import annotations

from typing import Callable

import torch

from revival.errors import RevivalError


def row_stats(w: torch.Tensor, surviving: torch.Tensor, chunk: int = 128) -> dict[str, torch.Tensor]:
    """Per-row stats of the surviving entries: mean, std (unbiased), max |w|, mean |w|; [out] each (float64).

    Computed `chunk` rows at a time (two passes per chunk), so the extra memory stays small.
    """
    parts: dict[str, list[torch.Tensor]] = {"mean": [], "std": [], "max": [], "absmean": []}
    for r0 in range(0, w.shape[0], chunk):
        wc = w[r0:r0 + chunk].float()
        sc = surviving[r0:r0 + chunk]
        ws = torch.where(sc, wc, 0.0)
        n = sc.sum(1).double()
        mu = ws.sum(1).double() / n.clamp(min=1)
        dev = torch.where(sc, wc - mu.float()[:, None], 0.0)
        parts["mean"].append(mu)
        parts["std"].append(((dev * dev).sum(1).double() / (n - 1).clamp(min=1)).sqrt())
        wabs = ws.abs_()
        parts["max"].append(wabs.amax(1).double() if wabs.shape[1] else torch.zeros_like(mu))
        parts["absmean"].append(wabs.sum(1).double() / n.clamp(min=1))
    st = {key: torch.cat(v) for key, v in parts.items()}
    n_rows = surviving.sum(1)
    empty = n_rows == 0
    if bool(empty.any()) and not bool(empty.all()):   # a fully pruned row borrows the layer's stats
        layer = row_stats(w[~empty].reshape(1, -1), surviving[~empty].reshape(1, -1))
        for key in st:
            st[key] = torch.where(empty, layer[key], st[key])
    return st


def _gauss(stats, rows, generator):
    z = torch.randn(rows.numel(), generator=generator, dtype=torch.float64)
    return (stats["mean"].cpu()[rows.cpu()] + stats["std"].cpu()[rows.cpu()] * z).abs().to(rows.device)


def neuron_max(w, surviving, rows, cols, signs, estimate, generator):
    """sign * max(|N(mu_r, sigma_r)|, rowmax_r * (1 + 1e-6))."""
    st = row_stats(w, surviving)
    mag = torch.maximum(_gauss(st, rows, generator), st["max"][rows] * (1 + 1e-6))
    return (signs * mag).float()


def sample(w, surviving, rows, cols, signs, estimate, generator):
    """sign * |N(mu_r, sigma_r)|."""
    return (signs * _gauss(row_stats(w, surviving), rows, generator)).float()


def mean(w, surviving, rows, cols, signs, estimate, generator):
    """sign * (mean |w| of the row's surviving weights)."""
    return (signs * row_stats(w, surviving)["absmean"][rows]).float()


def completed(w, surviving, rows, cols, signs, estimate, generator):
    """sign * |estimate|."""
    return (signs * estimate.abs()).float()


MagnitudeRule = Callable[..., torch.Tensor]
MAGNITUDES: dict[str, MagnitudeRule] = {
    "neuron-max": neuron_max,
    "sample": sample,
    "mean": mean,
    "completed": completed,
}


def get_magnitude(name: str) -> MagnitudeRule:
    """The magnitude rule called `name`; RevivalError listing the valid names otherwise."""
    try:
        return MAGNITUDES[name]
    except KeyError:
        raise RevivalError(f"unknown magnitude rule {name!r}; choose one of {', '.join(MAGNITUDES)}.") from None
