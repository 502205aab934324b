"""Batch: run profiles, the papermill runner (local pool or Dask) and the command line."""
