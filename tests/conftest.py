import os

# Tests run on the CPU.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
