"""Analysis: tables, the summary, figures, capacity, the tuning track, the README's generated blocks and a
run's static HTML (``html``), from records and executed notebooks.

Reads records; never trains. ``tables``, ``summary``, ``capacity``, ``tuning``, ``report`` and ``html``
import neither torch nor training (``plots`` neither, at run time).
"""
