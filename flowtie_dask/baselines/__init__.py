"""Comparative methods of the paper (gradient descent on the far-field amplitudes)."""

from .gd import available_memory, dense_gd_reconstruct, gd_memory_estimate, gd_reconstruct

__all__ = ["available_memory", "dense_gd_reconstruct", "gd_memory_estimate", "gd_reconstruct"]
