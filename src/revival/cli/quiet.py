"""`--quiet`: no third-party logs, warnings or progress bars while a verb runs; all restored after.

The verbs pass `progress=False` to the API for their own bars; this silences what the libraries
underneath print (transformers/diffusers/huggingface_hub logging and loading bars, every tqdm
bar, Python warnings). The one-line result is the verb's own print, so it still shows.
"""
from __future__ import annotations

import logging
import warnings
from contextlib import contextmanager

LOGGERS = ("transformers", "diffusers", "huggingface_hub", "accelerate", "torch", "PIL", "onnxruntime", "timm")


@contextmanager
def quiet(enabled: bool = True):
    """Silence third-party output inside the block when `enabled`."""
    if not enabled:
        yield
        return
    from tqdm import std

    restore = [_library_logging(name) for name in ("transformers", "diffusers")]
    loggers = [logging.getLogger(n) for n in LOGGERS]
    levels = [lg.level for lg in loggers]
    real_init = std.tqdm.__init__

    def silent_init(self, *args, **kwargs):
        kwargs["disable"] = True
        real_init(self, *args, **kwargs)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        std.tqdm.__init__ = silent_init
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            yield
        finally:
            std.tqdm.__init__ = real_init
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)
            for undo in restore:
                undo()


def _library_logging(name: str):
    """Set `name`'s own logging (transformers.utils.logging, diffusers.utils.logging) to errors
    only; returns the undo. A library not imported yet is not imported here (seconds): its
    `NAME_VERBOSITY` environment variable, read when it first logs, says the same."""
    import os
    import sys

    module = sys.modules.get(f"{name}.utils.logging")
    if module is None:
        key = f"{name.upper()}_VERBOSITY"
        before = os.environ.get(key)
        os.environ[key] = "error"

        def undo():
            if before is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = before
            lib = sys.modules.get(f"{name}.utils.logging")
            if lib is not None:  # imported inside the block: back to its default
                lib.set_verbosity(logging.WARNING)

        return undo
    verbosity = module.get_verbosity()
    module.set_verbosity_error()

    def undo():
        module.set_verbosity(verbosity)

    return undo
