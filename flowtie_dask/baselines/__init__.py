"""Comparative methods of the paper (gradient descent on the far-field amplitudes)."""

from .gd import available_memory, dense_gd_reconstruct, gd_memory_estimate, gd_reconstruct, gd_reconstruct_store

__all__ = ["available_memory", "dense_gd_reconstruct", "gd_memory_estimate", "gd_reconstruct", "gd_reconstruct_store"]
