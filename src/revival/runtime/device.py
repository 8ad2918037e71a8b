"""Where the model side runs and in which precision: one policy for every verb.

    device: "cuda" when a GPU is present, else "cpu" (or whatever the user names: "cuda:1", "cpu");
            under `accelerate launch` / `torchrun` each process takes its own GPU (local rank).
    dtype:  fp16 on CUDA (the paper's runs), fp32 on CPU (half precision is slow and lossy there);
            "fp16" | "bf16" | "fp32" to choose.

Pipelines are loaded with `torch_dtype`; the testbed UNet is cast. Statistics (ConceptPrune's
activation norms) are accumulated in fp64 on the weights' device; masks and weight edits are made
on the weights' device too, so a tensor only ever meets tensors of its own device.

Example::

    place = placement("cuda", "bf16")      # Placement(device='cuda', dtype='bf16')
    pipe = load_model("testbed", device=place.device, dtype=place.dtype)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from revival.errors import RevivalError

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}


def default_device() -> str:
    """"cuda" when torch sees a GPU, else "cpu"."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """The torch.device for a user's `--device` (None: the default); refuses an unusable one."""
    if device is None or str(device) in ("", "auto"):
        device = default_device()
        if device == "cuda":
            from revival.runtime.distributed import local_cuda_device

            return local_cuda_device()
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise RevivalError(f"--device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}.") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RevivalError(f"--device {device} asks for a GPU, but torch sees none (use --device cpu).")
        if dev.index is None:
            from revival.runtime.distributed import local_cuda_device

            return local_cuda_device()
        if dev.index >= torch.cuda.device_count():
            raise RevivalError(f"--device {device}: torch sees only {torch.cuda.device_count()} GPU(s).")
    elif dev.type not in ("cpu", "mps"):
        raise RevivalError(f"--device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}.")
    return dev


def resolve_dtype(dtype: str | torch.dtype | None, device: str | torch.device) -> torch.dtype:
    """The torch dtype for `--dtype` (None: fp16 on CUDA, fp32 elsewhere)."""
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPE_NAMES:
            raise RevivalError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype}.")
        return dtype
    if dtype is None or dtype in ("", "auto"):
        return torch.float16 if torch.device(device).type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise RevivalError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}.")
    return DTYPES[dtype]


@dataclass(frozen=True)
class Placement:
    """A resolved (device, dtype) pair; `str` forms for reports."""

    device: torch.device
    dtype: torch.dtype

    @property
    def dtype_name(self) -> str:
        return DTYPE_NAMES[self.dtype]

    def to_dict(self) -> dict:
        return {"device": str(self.device), "dtype": self.dtype_name}


def placement(device: str | torch.device | None = None, dtype: str | torch.dtype | None = None) -> Placement:
    """Resolve `--device` and `--dtype` together (the dtype default depends on the device)."""
    dev = resolve_device(device)
    return Placement(dev, resolve_dtype(dtype, dev))


def same_device(a: torch.device | str, b: torch.device | str) -> bool:
    """True when two devices name the same place ("cuda" and "cuda:0" on a one-GPU process agree)."""
    a, b = torch.device(a), torch.device(b)
    if a.type != b.type:
        return False
    if a.type != "cuda":
        return True
    cur = torch.cuda.current_device() if torch.cuda.is_available() else 0
    return (a.index if a.index is not None else cur) == (b.index if b.index is not None else cur)
