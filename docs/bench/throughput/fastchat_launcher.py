"""Run one FastChat 0.2.36 process (controller, model_worker or openai_api_server) under transformers 5.

FastChat 0.2.36 reads the context length with ``config.rope_scaling["factor"]``
(``fastchat.utils.get_context_length``). Transformers 5 replaced ``rope_scaling`` with
``rope_parameters``; the ``rope_scaling`` alias it keeps for Llama configs is a dict like
``{"rope_theta": ..., "rope_type": "default"}`` with no ``"factor"``, so the model worker dies with
``KeyError: 'factor'`` while loading. This launcher replaces that one function (a rope factor of 1
unless the config names one, or a fixed length from ``--context-len``) and then runs FastChat's own
module as ``__main__`` with the remaining arguments, unchanged.

    python fastchat_launcher.py controller --host 127.0.0.1 --port 21001
    python fastchat_launcher.py model_worker --host 127.0.0.1 --port 21002 \
        --worker-address http://127.0.0.1:21002 --controller-address http://127.0.0.1:21001 \
        --model-path <SmolLM2 folder> --model-names smollm2 --device cpu [--context-len 8192]
    python fastchat_launcher.py openai_api_server --host 127.0.0.1 --port 8000 \
        --controller-address http://127.0.0.1:21001

Run it with the FastChat venv's python (``/work/fcvenv/bin/python``), not curate's.
"""

from __future__ import annotations

import runpy
import sys

ROLES = ("controller", "model_worker", "openai_api_server")


def _take_context_len(argv: list[str]) -> tuple[int | None, list[str]]:
    """``--context-len N`` is ours, not FastChat's: remove it from the arguments FastChat parses."""
    out, value, i = [], None, 0
    while i < len(argv):
        if argv[i] == "--context-len" and i + 1 < len(argv):
            value, i = int(argv[i + 1]), i + 2
        elif argv[i].startswith("--context-len="):
            value, i = int(argv[i].split("=", 1)[1]), i + 1
        else:
            out.append(argv[i])
            i += 1
    return value, out


def patch(context_len: int | None = None) -> None:
    import fastchat.utils as utils

    keys = utils.SEQUENCE_LENGTH_KEYS

    def get_context_length(config) -> int:
        if context_len is not None:
            return context_len
        rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
        factor = rope.get("factor") if isinstance(rope, dict) else None
        factor = float(factor) if factor else 1.0
        for key in keys:
            val = getattr(config, key, None)
            if val is not None:
                return int(factor * val)
        return 2048

    utils.get_context_length = get_context_length
    # Modules that already did `from fastchat.utils import get_context_length` hold the old one.
    for name in ("fastchat.serve.inference", "fastchat.serve.model_worker", "fastchat.serve.base_model_worker"):
        module = sys.modules.get(name)
        if module is not None and hasattr(module, "get_context_length"):
            module.get_context_length = get_context_length


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in ROLES:
        sys.exit(f"usage: {sys.argv[0]} {{{'|'.join(ROLES)}}} [FastChat arguments...]")
    role = sys.argv[1]
    context_len, rest = _take_context_len(sys.argv[2:])
    patch(context_len)
    sys.argv = [f"fastchat.serve.{role}", *rest]
    runpy.run_module(f"fastchat.serve.{role}", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
