"""Concepts: the concept catalog (concepts.toml), real images of a concept, and the evaluation rows unlearning did not use."""
