"""Data parallelism through Hugging Face accelerate: the same code runs as one process, or as many
under `accelerate launch` / `torchrun` (GPUs with NCCL, CPU processes with gloo, one node or many).

    shard(n)            the item indices this process handles (contiguous blocks, no padding)
    gather(pairs, n)    every process's (index, value) pairs -> the n values in item order
    all_reduce_sum(t)   sum a statistics tensor over processes (in place, on its own device)
    agree(value, what)  refuse a launch whose processes disagree (e.g. different configs)
    is_main()           the process that writes reports

Work is split by item (image, prompt) and every item carries its own seed, so the outputs (image
bytes, accuracies, masks) do not depend on the number of processes.
"""
from __future__ import annotations

import atexit
import hashlib
import os

import torch

from revival.errors import RevivalError


def _launched() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def state():
    """accelerate's PartialState (initialises the process group once when launched): NCCL over
    the GPUs when torch sees them, else gloo over CPU processes (also with `accelerate launch --cpu`)."""
    global _EXIT_HOOK
    from accelerate import PartialState

    st = PartialState(cpu=not torch.cuda.is_available())
    if _launched() and not _EXIT_HOOK:
        atexit.register(_close)  # a process group left open can abort the interpreter at exit
        _EXIT_HOOK = True
    return st


_EXIT_HOOK = False


def _close() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def num_processes() -> int:
    return state().num_processes if _launched() else 1


def process_index() -> int:
    return state().process_index if _launched() else 0


def is_main() -> bool:
    return process_index() == 0


def local_cuda_device() -> torch.device:
    """This process's GPU: cuda:LOCAL_RANK under a launcher, else the current one."""
    if _launched():
        dev = state().device
        if dev.type == "cuda":
            return dev
    return torch.device("cuda", torch.cuda.current_device())


def shard(n: int) -> list[int]:
    """Indices 0..n-1 of the items this process handles (accelerate's split, without padding)."""
    items = list(range(n))
    if not _launched():
        return items
    with state().split_between_processes(items, apply_padding=False) as mine:
        return list(mine)


def gather(pairs: list[tuple[int, object]], n: int) -> list:
    """Every process's (index, value) pairs -> the list of n values in item order, on every process.
    An index seen twice (a padded split repeats its last item) is kept once."""
    if _launched():
        pairs = _all_gather(list(pairs))
    out: dict[int, object] = {}
    for i, v in pairs:
        out.setdefault(int(i), v)
    if sorted(out) != list(range(n)):
        raise RevivalError(f"gathered {len(out)} of {n} items from the processes.")
    return [out[i] for i in range(n)]


def _all_gather(items: list) -> list:
    """Concatenate every process's list, in process order (our PartialState initialises first:
    accelerate's own helpers would set up a GPU-only state on a CPU launch)."""
    import torch.distributed as dist

    state()
    parts = [None] * dist.get_world_size()
    dist.all_gather_object(parts, items)
    return [x for part in parts for x in part]


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum `t` over the processes in place (gloo works on CPU copies, NCCL on the GPU)."""
    if not _launched():
        return t
    import torch.distributed as dist

    st = state()
    if st.backend == "nccl" or t.device.type == "cpu":
        dist.all_reduce(t)
        return t
    host = t.cpu()
    dist.all_reduce(host)
    t.copy_(host)
    return t


def barrier() -> None:
    if _launched():
        state().wait_for_everyone()


def agree(value: str, what: str) -> None:
    """Raise on every process when the processes hold different `value`s (e.g. a config digest)."""
    if not _launched():
        return
    digest = hashlib.sha256(value.encode()).hexdigest()
    seen = _all_gather([digest])
    if len(set(seen)) != 1:
        raise RevivalError(f"the {len(seen)} processes of this launch disagree on {what}; "
                           "start them all with the same arguments.")


def info() -> dict:
    """What evaluation reports record about the launch."""
    return {"processes": num_processes()}
