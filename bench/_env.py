"""The environment every benchmark script sets before numpy, torch or faiss load.

    import _env  # bench/ is on sys.path when a script in it runs
    THREADS = _env.pin(sys.argv[1:])

``--threads N`` is read here, before argparse runs (BLAS and OpenMP read their thread counts once,
at import), and pins OpenMP/MKL/OpenBLAS to it: another process on the 2 cores changes timings by
2-9x, and two 2-thread training processes slow each step ~10x, so benchmarks that share the machine
run with ``--threads 1``.
"""

from __future__ import annotations

import os


def early_threads(argv: list[str], default: int = 2) -> int:
    """``--threads`` (or ``--threads=N``) from the command line, else ``default``."""
    for i, arg in enumerate(argv):
        if arg.startswith("--threads="):
            return int(arg.split("=", 1)[1])
        if arg == "--threads" and i + 1 < len(argv):
            return int(argv[i + 1])
    return default


def pin(argv: list[str], default: int = 2) -> int:
    threads = early_threads(argv, default)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    # Waiting OpenMP threads sleep instead of spinning: with other jobs on the 2 cores, a spinning
    # thread steals the time its partner needs; measured at load ~10 on a batch of 8 x 160 tokens:
    # 2 threads 31 tokens/s spinning, 66 passive, 1 thread 64-70.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    for var, value in (("CURATE_QUIET", "1"), ("HF_HUB_OFFLINE", "1"), ("TOKENIZERS_PARALLELISM", "false"),
                       ("HF_HUB_DISABLE_PROGRESS_BARS", "1"), ("HF_DATASETS_DISABLE_PROGRESS_BARS", "1"),
                       ("TRANSFORMERS_VERBOSITY", "error")):
        os.environ.setdefault(var, value)
    return threads
