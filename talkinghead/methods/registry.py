"""The method registry: one line per method (its declaration lives in its folder's ``method.py``).

``talkinghead train|generate --method X``, ``make train METHOD=X`` and the bench's method list
read this. Adding a method: write ``talkinghead/methods/<name>/`` (see README, "Adding a method")
and add its line below.
"""
from __future__ import annotations

from talkinghead.methods.pcavs.method import METHOD as PCAVS
from talkinghead.methods.pdfgc.method import METHOD as PDFGC
from talkinghead.methods.rhythmic.method import METHOD as RHYTHMIC
from talkinghead.methods.syncnet.method import METHOD as SYNCNET
from talkinghead.training.method import BenchRow, Method

__all__ = ["METHODS", "UnknownMethodError", "bench_rows", "get_method"]

METHODS: dict[str, Method] = {m.name: m for m in (SYNCNET, PCAVS, PDFGC, RHYTHMIC)}


class UnknownMethodError(KeyError):
    """A ``--method`` name that is not registered; the message lists the registered ones."""

    def __str__(self) -> str:  # KeyError quotes its message; show it as a sentence
        return str(self.args[0]) if self.args else ""


def get_method(name: str) -> Method:
    """The declaration of method `name`; UnknownMethodError listing the registered names otherwise."""
    if name not in METHODS:
        raise UnknownMethodError(f"unknown method {name!r}; registered methods: {', '.join(METHODS)}")
    return METHODS[name]


def bench_rows() -> dict[str, tuple[Method, BenchRow]]:
    """{row name: (its method, the row)} over every registered method."""
    rows: dict[str, tuple[Method, BenchRow]] = {}
    for method in METHODS.values():
        for name, row in method.bench.items():
            if name in rows:
                raise ValueError(f"bench row {name!r} is declared by both {rows[name][0].name} and {method.name}")
            rows[name] = (method, row)
    return rows
