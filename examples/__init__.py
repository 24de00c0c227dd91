"""Runnable examples of attn-surgeon in training code (importable from the repository root as ``examples``)."""
