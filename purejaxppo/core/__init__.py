"""The pure, jittable algorithm: configuration, networks, rollout, GAE, losses, update, train.

Nothing here writes files, parses arguments or places arrays on devices; data parallelism
enters only through the injected :class:`~purejaxppo.core.collectives.Collectives`.
"""
