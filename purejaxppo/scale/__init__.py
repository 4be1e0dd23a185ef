"""Scaling a trainer out: sweeps over seeds and settings (one program, the agent axis sharded over
devices and processes), population-based training, data parallelism, several processes, and the
statistics over seeds.

Nothing is imported here: each module is imported where it is used.
"""
