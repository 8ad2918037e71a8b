"""revival: concept revival in pruning-based unlearning for diffusion models, and its defense.

Implements "Roots Beneath the Cut" (Zhang et al., CVPR 2026, arXiv 2603.06640).
"""
from .errors import RevivalError

__version__ = "0.1.0"
__all__ = ["RevivalError", "__version__"]
