"""Core: what the study compares: neurons (one registry), tasks (one registry), budget-matched models.

Imports only ``rnlib.paths``/``rnlib.provenance`` and itself; never training, analysis or batch.
"""
