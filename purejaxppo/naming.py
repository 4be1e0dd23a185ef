"""Environment-name conventions that every layer needs without importing the environments.

Importing gymnax initialises JAX's backend, which a multi-process run may only do after joining
its coordinator, so the configuration and result modules recognise names from here.
"""

BRAX_PREFIX = "brax/"


def is_brax(name: str) -> bool:
    """Whether ``name`` names a Brax task (``brax/<task>[-<backend>]``), valid or not."""
    return name.startswith(BRAX_PREFIX)
