"""Analysis: records, the comparison rule, the summary, figures and the README/HTML report.

Reads records; never trains. ``records``, ``summary`` and ``report`` import neither torch nor training.
"""
