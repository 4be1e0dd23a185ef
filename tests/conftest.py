import os
import tempfile

# Tests run on the CPU.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The command line turns on JAX's persistent compilation cache; in tests it lives in a fresh
# folder for the session (shared by the command-line runs the tests start), never in ~/.cache.
os.environ["PUREJAXPPO_COMPILATION_CACHE"] = tempfile.mkdtemp(prefix="purejaxppo-test-cache-")
