"""LLM runtimes side by side: llama-cpp-python (the one dubfleet uses) vs CTranslate2, and Apertium.

Same GGUF model, same prompts (worker.stages.translate_llm), same machine, same run, each runtime
in its own process: load time, sentences per second (all at once and one by one), peak RSS and
chrF on the public dev set (../shared/data/mt-dev, 12 sentences with 2 references), without and
with context. CTranslate2 needs a one-time conversion (transformers dequantizes the GGUF, the
converter writes int8; `pip install -e '.[bench]'`), done here on first run into the model cache.
Usage: python bench/bench_llm.py [--out results.json]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from worker.stages.translate_llm import (  # noqa: E402
    LlamaBackend, LLMEngine, Request, _END_TOKENS,
)

THREADS = os.cpu_count() or 1  # both runtimes on every core (the worker uses half)
DEV = ROOT / "tests" / "media" / "texts" / "mt-dev"  # a copy of the team's ../shared/data/mt-dev
CT2_DIR = "qwen2.5-coder-1.5b-instruct-ct2-int8"


class CT2Backend:
    """The same model converted to CTranslate2 int8 (bench only), decoded in real batches."""

    def __init__(self, path: str):
        import ctranslate2
        from tokenizers import Tokenizer

        self.generator = ctranslate2.Generator(path, device="cpu", compute_type="int8",
                                               intra_threads=THREADS)
        self.tokenizer = Tokenizer.from_file(str(Path(path) / "tokenizer.json"))

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def generate(self, prompts: Sequence[str], max_new_tokens: Sequence[int]) -> list[str]:
        tokens = [self.tokenizer.encode(p, add_special_tokens=False).tokens for p in prompts]
        results = self.generator.generate_batch(
            tokens, max_length=max(max_new_tokens), sampling_topk=1, max_batch_size=8,
            include_prompt_in_result=False, end_token=_END_TOKENS)
        return [self.tokenizer.decode(r.sequences_ids[0][:n])
                for r, n in zip(results, max_new_tokens)]


def convert_ct2(gguf: Path, dest: Path) -> Path:
    """One-time GGUF → CTranslate2 int8 conversion (dequantized by transformers)."""
    if (dest / "model.bin").is_file():
        return dest
    import tempfile

    import torch
    from ctranslate2.converters import TransformersConverter
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    with tempfile.TemporaryDirectory(dir=dest.parent) as hf_dir:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float16,
            quantization_config=GgufConfig(gguf_file=str(gguf), dequantize=True))
        model.save_pretrained(hf_dir)
        tokenizer.save_pretrained(hf_dir)
        del model
        TransformersConverter(hf_dir, load_as_float16=True).convert(str(dest), quantization="int8")
        (dest / "tokenizer.json").write_bytes((Path(hf_dir) / "tokenizer.json").read_bytes())
    return dest


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load_dev() -> tuple[list[str], list[list[str]]]:
    """Source sentences and the two reference lists."""
    src = (DEV / "src.en").read_text().splitlines()
    return src, [(DEV / f"ref{x}.es").read_text().splitlines() for x in "AB"]


def chrf(hyps: list[str], refs: list[list[str]]) -> float:
    import sacrebleu

    return round(sacrebleu.corpus_chrf(hyps, refs).score, 1)


def measure(runtime: str, path: str, src: list[str], refs: list[list[str]]) -> dict:
    """Load, translate the dev set all at once and one by one, with context; score it."""
    rss0, t0 = _rss_mb(), time.perf_counter()
    engine = LLMEngine(LlamaBackend(path, threads=THREADS) if runtime == "llama_cpp"
                       else CT2Backend(path))
    load = time.perf_counter() - t0
    t0 = time.perf_counter()
    batched = engine.translate_requests([Request(s) for s in src], "en", "es")
    t_batch = time.perf_counter() - t0
    t0 = time.perf_counter()
    single = [engine.translate_requests([Request(s)], "en", "es")[0] for s in src]
    t_single = time.perf_counter() - t0
    t0 = time.perf_counter()
    with_context: list[str] = []  # as the worker does: the two previous pairs as earlier turns
    for i, text in enumerate(src):
        before = tuple(zip(src[max(0, i - 2):i], with_context[max(0, i - 2):i]))
        with_context += engine.translate_requests([Request(text, before)], "en", "es")
    t_context = time.perf_counter() - t0
    return {"load_s": round(load, 2), "sentences_per_s_all_at_once": round(len(src) / t_batch, 2),
            "sentences_per_s_one_by_one": round(len(src) / t_single, 2),
            "sentences_per_s_with_context": round(len(src) / t_context, 2),
            "peak_rss_mb": round(_rss_mb()), "rss_growth_mb": round(_rss_mb() - rss0),
            "chrf": chrf(batched, refs), "chrf_one_by_one": chrf(single, refs),
            "chrf_with_context": chrf(with_context, refs),
            "sample": list(zip(src[:4], with_context[:4]))}


def _child(runtime: str, path: str, queue) -> None:
    src, refs = load_dev()
    try:
        queue.put(measure(runtime, path, src, refs))
    except Exception as exc:  # a missing optional runtime is reported, not fatal
        queue.put({"skipped": f"{type(exc).__name__}: {exc}"})


def in_child(runtime: str, path: str) -> dict:
    """Measure one runtime in a fresh process (so its RSS is its own)."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(runtime, path, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    from worker import llm_model
    from worker.stages.translate_apertium import ApertiumEngine

    src, refs = load_dev()
    t0 = time.perf_counter()
    apertium = ApertiumEngine().translate_texts(src, "en", "es")
    results = {"threads": THREADS, "apertium": {
        "chrf": chrf(apertium, refs),
        "sentences_per_s": round(len(src) / (time.perf_counter() - t0), 1)}}
    gguf = llm_model.install()
    results["llama_cpp"] = in_child("llama_cpp", str(gguf))
    try:
        t0 = time.perf_counter()
        ct2 = convert_ct2(gguf, llm_model.model_dir() / CT2_DIR)
        results["ctranslate2_conversion_s"] = round(time.perf_counter() - t0, 1)
        results["ctranslate2"] = in_child("ctranslate2", str(ct2))
    except ImportError as exc:
        results["ctranslate2"] = {"skipped": f"{exc} (pip install -e '.[bench]')"}
    text = json.dumps(results, ensure_ascii=False, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
