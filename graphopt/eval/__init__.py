"""Evaluation engine: datasets, training, cost/latency, executors and the result store.

Import the submodules directly (``graphopt.eval.data``, ``.train``, ``.cost``, ``.executors``, ``.store``);
this package stays import-light so the CLI starts fast.
"""
