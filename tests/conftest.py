import os

# Tests run on the CPU.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

# The package sets its XLA flags on import; do it here too, before any test module can start
# a JAX backend, so that the whole session runs with them.
from purejaxppo._xla import configure_xla  # noqa: E402

configure_xla()
