#!/usr/bin/python3
"""Writes the end-to-end test data (CTest fixture `e2e_testdata`): random checkpoints at real
shapes (HF directory + GGUF, tools/make_random_checkpoint.py) and the numpy reference's logits
and greedy tokens for them (llama_reference.py).

  make_testdata.py --out BUILD/testdata [--cases a,b] [--force]

For each case, DIR/<case>/ holds hf/ (the checkpoint), model.gguf, logits.f32 (raw
little-endian float32 [n_prompt, vocab], the reference logits at every prompt position) and
reference.json:
  prompt, n_positions, vocab_size, atol (allowed max |edgelm - reference| for any logit),
  greedy (16 tokens after the prompt), greedy_margins (top-1 minus top-2 logit per step),
  greedy_checked (how many leading greedy tokens are unambiguous: margin > 2 * atol, so any
  implementation within atol must pick them, and no special token), context_length (a session
  length that fits prompt + greedy), special_tokens.
A case is rebuilt only when its parameters or these scripts change (stamp.json).

Tolerance: atol = rel * max|reference logit| + 1e-4 with rel 1e-3 for f32 weights and 2e-3 for
f16/bf16 weights. Measured with llama_reference's emulation modes on these models: an F16 KV
cache moves logits by 0.04-0.06% of max|logit|, F16-rounded matmul inputs plus F16 KV by
0.06-0.11%, BF16-rounded matmul inputs by 0.5-0.8% (edgelm itself was ~1e-6 of max|logit|
off). So the bounds accept F32 activations with an F16 KV cache (edgelm's matmul contract: F32
activations), and F16 activations for half-precision weights, but not BF16-rounded
activations, which would fail by design.
"""

import argparse
import hashlib
import json
import os
import shutil
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(REPO, "tools"))

import llama_reference  # noqa: E402
import make_random_checkpoint  # noqa: E402

GREEDY_TOKENS = 16
CANDIDATE_PROMPTS = 4  # default; the one with the most unambiguous greedy steps is kept
MIN_CHECKED = 8

# name -> generator parameters and prompt length. Real shapes (hidden, heads, kv heads, head
# dim, ffn, rope, bias, tying) with fewer layers and a cut vocabulary to keep files small;
# llama3-long is a narrow Llama 3.2 variant (explicit head_dim 64 with 6 heads on hidden 256)
# run over 1100 positions, where llama3 rope scaling changes the low frequencies by a lot.
CASES = {
    "smollm2-135m": dict(preset="smollm2-135m", layers=2, dtype="f32", vocab=8192, shards=1,
                         seed=11, prompt_len=12),
    "qwen2.5-0.5b": dict(preset="qwen2.5-0.5b", layers=2, dtype="bf16", vocab=8192, shards=1,
                         seed=12, prompt_len=12),
    "tinyllama-1.1b": dict(preset="tinyllama-1.1b", layers=1, dtype="f16", vocab=4096, shards=2,
                           seed=13, prompt_len=12),
    "llama-3.2-1b": dict(preset="llama-3.2-1b", layers=1, dtype="bf16", vocab=4096, shards=1,
                         seed=14, prompt_len=12),
    "llama3-long": dict(preset="llama-3.2-1b", layers=2, dtype="f32", vocab=2048, shards=1,
                        seed=15, prompt_len=1100, candidates=2,
                        shape=dict(hidden=256, heads=6, kv_heads=2, ffn=512)),
}
REL_TOLERANCE = {"f32": 1e-3, "f16": 2e-3, "bf16": 2e-3}
ABS_TOLERANCE = 1e-4


def sources_digest():
    h = hashlib.sha256()
    for path in [os.path.abspath(__file__), llama_reference.__file__,
                 make_random_checkpoint.__file__]:
        with open(path, "rb") as f:
            h.update(f.read())
    return h.hexdigest()


def dir_bytes(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs)


def build_case(name, params, case_dir):
    t0 = time.time()
    hf_dir = os.path.join(case_dir, "hf")
    gguf = os.path.join(case_dir, "model.gguf")
    make_random_checkpoint.generate(
        params["preset"], hf_dir, layers=params["layers"], vocab=params["vocab"],
        dtype=params["dtype"], shards=params["shards"], seed=params["seed"], gguf=gguf,
        shape=params.get("shape"))
    t1 = time.time()

    with open(os.path.join(hf_dir, "tokenizer.json"), encoding="utf-8") as f:
        tok = json.load(f)
    specials = sorted(t["id"] for t in tok["added_tokens"])
    with open(os.path.join(hf_dir, "tokenizer_config.json"), encoding="utf-8") as f:
        add_bos = json.load(f).get("add_bos_token", False)
    with open(os.path.join(hf_dir, "config.json")) as f:
        bos_id = json.load(f)["bos_token_id"]
    vocab = params["vocab"]
    ordinary = np.array(sorted(set(range(vocab)) - set(specials)))

    rng = np.random.default_rng(params["seed"] + 1000)
    n = params["prompt_len"]
    n_candidates = params.get("candidates", CANDIDATE_PROMPTS)
    prompts = ordinary[rng.integers(0, len(ordinary), size=(n_candidates, n))]
    if add_bos:
        prompts[:, 0] = bos_id  # like a tokenizer that adds BOS
    model = llama_reference.Model.from_dir(hf_dir)
    logits, greedy, margins = model.greedy(prompts, GREEDY_TOKENS)
    t2 = time.time()

    rel = REL_TOLERANCE[params["dtype"]]
    best = None
    for c in range(n_candidates):
        max_abs = float(np.abs(logits[c]).max())
        atol = rel * max_abs + ABS_TOLERANCE
        checked = 0
        while (checked < GREEDY_TOKENS and margins[c, checked] > 2 * atol and
               greedy[c, checked] not in specials):
            checked += 1
        if best is None or checked > best[1]:
            best = (c, checked, atol, max_abs)
    c, checked, atol, max_abs = best
    if checked < MIN_CHECKED:
        sys.exit(f"{name}: only {checked} unambiguous greedy steps; change the case's seed")

    logits[c].astype("<f4").tofile(os.path.join(case_dir, "logits.f32"))
    ref = {
        "case": name, "preset": params["preset"], "dtype": params["dtype"],
        "layers": params["layers"], "shards": params["shards"], "hf_dir": "hf",
        "gguf": "model.gguf", "logits_file": "logits.f32",
        "prompt": prompts[c].tolist(), "n_positions": n, "vocab_size": vocab,
        "atol": atol, "rel_tolerance": rel, "max_abs_logit": max_abs,
        "greedy": greedy[c].tolist(), "greedy_margins": margins[c].tolist(),
        "greedy_checked": checked, "context_length": n + GREEDY_TOKENS + 16,
        "special_tokens": specials,
    }
    with open(os.path.join(case_dir, "reference.json"), "w") as f:
        json.dump(ref, f, indent=1)
    return t1 - t0, t2 - t1, checked, atol


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="test data directory")
    ap.add_argument("--cases", help="comma-separated subset of: " + ", ".join(CASES))
    ap.add_argument("--force", action="store_true", help="rebuild even if up to date")
    args = ap.parse_args()
    names = args.cases.split(",") if args.cases else list(CASES)
    for name in names:
        if name not in CASES:
            ap.error(f"unknown case {name!r}")
    os.makedirs(args.out, exist_ok=True)
    digest = sources_digest()
    start = time.time()
    total_bytes = 0
    for name in names:
        case_dir = os.path.join(args.out, name)
        stamp_path = os.path.join(case_dir, "stamp.json")
        stamp = {"sources": digest, "params": CASES[name]}
        try:
            with open(stamp_path) as f:
                fresh = json.load(f) == stamp and not args.force
        except (OSError, ValueError):
            fresh = False
        if fresh:
            print(f"{name}: up to date")
        else:
            if os.path.exists(case_dir):
                shutil.rmtree(case_dir)
            os.makedirs(case_dir)
            gen_s, ref_s, checked, atol = build_case(name, CASES[name], case_dir)
            with open(stamp_path, "w") as f:
                json.dump(stamp, f)
            print(f"{name}: generated in {gen_s:.1f}s, reference in {ref_s:.1f}s, "
                  f"{checked}/{GREEDY_TOKENS} greedy tokens checked, atol {atol:.4f}")
        size = dir_bytes(case_dir)
        total_bytes += size
        print(f"  {size / 1e6:.0f} MB in {case_dir}")
        sys.stdout.flush()
    print(f"test data: {total_bytes / 1e6:.0f} MB, {time.time() - start:.1f}s")


if __name__ == "__main__":
    main()
