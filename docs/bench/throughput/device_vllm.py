"""hf vs vLLM throughput on a GPU, side by side in one run: option scoring and generation tokens/s.

For a lent GPU machine (nothing outside it can be reached, so nothing is downloaded): it builds a
real-shape model from a config (SmolLM2-360M's shape: Llama, 32 layers, d=960) with random weights
and a tokenizer trained in code, saves it, and times the same prompts through curate's hf backend
and its vLLM backend. It installs nothing: where vllm does not import, it says so and times hf only.

    python docs/bench/throughput/device_vllm.py [--prompts 512] [--new-tokens 64]

Prints the load average, both backends' tokens/s and their ratio; writes device_vllm.json beside
itself (or under $OUT when set).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def build_model(folder: Path, layers: int = 32) -> Path:
    import torch
    from conftest import build_tiny_tokenizer
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tiny_tokenizer()
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=960, intermediate_size=2560, num_hidden_layers=layers,
                         num_attention_heads=15, num_key_value_heads=5, max_position_embeddings=2048,
                         tie_word_embeddings=True, torch_dtype="bfloat16")
    torch.manual_seed(0)
    LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def timed(fn) -> tuple[float, object]:
    import torch

    torch.cuda.synchronize() if torch.cuda.is_available() else None
    clock = time.perf_counter()
    out = fn()
    torch.cuda.synchronize() if torch.cuda.is_available() else None
    return time.perf_counter() - clock, out


def measure(backend, prompts: list[str], new_tokens: int) -> dict:
    options = ["yes", "no"]
    backend.option_logprobs(prompts[:8], options)  # warm-up: kernels, caches
    before = backend.usage.input_tokens
    seconds, _ = timed(lambda: backend.option_logprobs(prompts, options))
    read = backend.usage.input_tokens - before
    before_out = backend.usage.output_tokens
    gen_seconds, _ = timed(lambda: backend.generate(prompts, n=1, max_new_tokens=new_tokens, temperature=0.0))
    written = backend.usage.output_tokens - before_out
    return {"score_tokens_per_s": read / seconds, "score_seconds": seconds, "generate_tokens_per_s": written / gen_seconds,
            "generate_seconds": gen_seconds}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=512)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--layers", type=int, default=32, help="fewer for a smoke test on a CPU")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f}", flush=True)
    prompts = [f"Review {i}: the product arrived on time and works as described, mostly. Is it positive?"
               for i in range(args.prompts)]
    results: dict = {"prompts": args.prompts, "new_tokens": args.new_tokens}
    with tempfile.TemporaryDirectory() as tmp:
        model = str(build_model(Path(tmp) / "model", args.layers))
        import torch

        from curate.backends.hf import TransformersBackend

        device = "cuda" if torch.cuda.is_available() else "cpu"
        results["device"] = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
        results["hf"] = measure(TransformersBackend(model, device=device), prompts, args.new_tokens)
        print("hf", json.dumps(results["hf"]), flush=True)
        try:
            import vllm  # noqa: F401
        except ImportError as err:
            results["vllm"] = f"not importable here: {err}"
        else:
            from curate.backends.vllm import VLLMBackend

            backend = VLLMBackend(model, engine_kwargs={"enable_prefix_caching": True, "gpu_memory_utilization": 0.5,
                                                        "dtype": "bfloat16"})
            results["vllm"] = measure(backend, prompts, args.new_tokens)
            for key in ("score_tokens_per_s", "generate_tokens_per_s"):
                results[f"vllm_over_hf_{key}"] = results["vllm"][key] / results["hf"][key]
        print("vllm", json.dumps(results["vllm"]), flush=True)
    out = Path(os.environ.get("OUT", Path(__file__).parent)) / "device_vllm.json"
    out.write_text(json.dumps(results, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
