"""Exporters: a built network to a deployable file, verified against PyTorch."""
