"""Named members of a family (attackers, erasures, defenses, judges), registered by a decorator
in the member's own file; the CLI reads its choices and help from here.

    ERASURES = Registry("erasure method")
    @ERASURES.register("anchor", "the concept's captions learn an anchor's images")
    def anchor(...): ...
    ERASURES.get("anchor"); ERASURES.names(); ERASURES.help()
"""
from __future__ import annotations

from collections.abc import Callable

from revival.errors import RevivalError


class Registry:
    def __init__(self, kind: str):
        self.kind = kind
        self._members: dict[str, Callable] = {}
        self._help: dict[str, str] = {}
        self._rank: dict[str, float] = {}

    def register(self, name: str, help: str = "", rank: float | None = None) -> Callable[[Callable], Callable]:
        """`rank`: the member's place in `names()` (ascending; unranked members follow in the
        order they registered), for families whose order means something (the attackers'
        ladder runs cheapest first), whatever order their files were imported in."""
        def add(member: Callable) -> Callable:
            if name in self._members:
                raise ValueError(f"{self.kind} {name!r} is registered twice.")
            self._members[name] = member
            self._help[name] = help
            self._rank[name] = float("inf") if rank is None else float(rank)
            return member

        return add

    def get(self, name: str) -> Callable:
        if name not in self._members:
            raise RevivalError(f"unknown {self.kind} {name!r}; choose one of {', '.join(self.names())}.")
        return self._members[name]

    def names(self) -> tuple[str, ...]:
        order = list(self._members)
        return tuple(sorted(order, key=lambda n: (self._rank[n], order.index(n))))

    def help(self) -> str:
        return "; ".join(f"{n} ({self._help[n]})" if self._help[n] else n for n in self.names())

    def __contains__(self, name: str) -> bool:
        return name in self._members

    def __iter__(self):
        return iter(self.names())
