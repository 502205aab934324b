"""Training: the batched trainer and its fused CPU step, the result cache, a notebook's Study, capacity.

Imports core; never analysis or batch.
"""
