"""Spec files: loading, schema and static pass. Nothing here imports torch."""
