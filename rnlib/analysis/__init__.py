"""Analysis: tables, the summary, figures, capacity and the README's generated blocks, from records.

Reads records; never trains. ``tables``, ``summary``, ``capacity`` and ``report`` import neither torch nor
training (``plots`` neither, at run time).
"""
