"""Model outputs that do not depend on the batch a request ran in.

A CPU or GPU matrix product may pick another kernel, and so another summation order, for another
row count: the same input then gives results that differ in the last bits depending on what else
was in its batch. Micro-batching services (the generator, the retriever) would then answer the same
request differently from run to run, and a resumed evaluation would not reproduce an uninterrupted
one. These patches remove the usual sources: linear layers with few rows run on a fixed,
zero-padded row count, and convolutions run one sample at a time. Text encoders, whose sequence
length follows the longest text of a batch, are run one text at a time by their callers.
"""

from __future__ import annotations

import types

PAD_ROWS = 64


def padded_linear(self, x):
    """nn.Linear.forward on a fixed row count when the input has few rows."""
    import torch.nn.functional as F

    rows = x.numel() // x.shape[-1] if x.shape[-1] else 0
    if rows == 0 or rows >= PAD_ROWS:
        return F.linear(x, self.weight, self.bias)
    flat = F.pad(x.reshape(rows, x.shape[-1]), (0, 0, 0, PAD_ROWS - rows))
    return F.linear(flat, self.weight, self.bias)[:rows].reshape(*x.shape[:-1], self.out_features)


def per_sample_conv(self, x):
    """nn.Conv2d.forward one sample at a time, so the algorithm never depends on the batch size."""
    import torch

    if x.dim() != 4 or x.shape[0] == 1:
        return self._conv_forward(x, self.weight, self.bias)
    return torch.cat([self._conv_forward(x[i:i + 1], self.weight, self.bias) for i in range(x.shape[0])])


def _patch_all(module, layer: str, forward) -> int:
    """Give every torch.nn.<layer> under `module` the forward `forward`; returns how many."""
    import torch

    n = 0
    for m in module.modules():
        if isinstance(m, getattr(torch.nn, layer)):
            m.forward = types.MethodType(forward, m)
            n += 1
    return n


def pad_linears(module) -> int:
    """Patch every nn.Linear under `module`; returns how many."""
    return _patch_all(module, "Linear", padded_linear)


def per_sample_convs(module) -> int:
    """Patch every nn.Conv2d under `module`; returns how many."""
    return _patch_all(module, "Conv2d", per_sample_conv)
