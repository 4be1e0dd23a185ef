"""Running training outside the compiled program: the chunked runner, checkpoints, loggers, result files,
the run-folder layout, evaluation, loaded policies, rendering and the reproduction suites.

Nothing is imported here: each module is imported where it is used (the command line imports only
what a command needs).
"""
