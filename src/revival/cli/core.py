"""CLI verbs (placeholder until implemented)."""


def register(sub) -> None:
    pass
