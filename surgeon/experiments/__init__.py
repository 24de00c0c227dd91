"""Experiments: ``attn-surgeon ablate``, training every arm with every seed and comparing them with statistics."""
