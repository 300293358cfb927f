#!/usr/bin/python3
"""Reference forward pass of Hugging Face LlamaForCausalLM / Qwen2ForCausalLM in numpy.

Written from the transformers modeling code (modeling_llama.py, modeling_qwen2.py,
modeling_rope_utils.py), not from edgelm, so that edgelm can be checked against it:
  embed_tokens -> per layer: x += o_proj(attn(RMSNorm(x))); x += down(silu(gate(h)) * up(h)),
  h = RMSNorm(x) -> RMSNorm -> lm_head (the embedding when tie_word_embeddings).
  RMSNorm: w * x / sqrt(mean(x^2) + eps). RoPE: rotate_half layout, inv_freq = 1 /
  theta^(2i/d), with the "llama3" (and "linear") rope_scaling rules. Attention: GQA via
  repeat_kv, causal softmax with scale 1/sqrt(head_dim). Qwen2 adds q/k/v biases.
Everything is computed in float64 from the stored weights (bf16/f16 widened exactly).

CLI:
  llama_reference.py --model DIR --tokens 1,2,3 [--out logits.npy] [--greedy N [--greedy-out F]]
--out FILE.npy writes float32 logits [n_tokens, vocab]; any other name gets raw little-endian
float32 plus FILE.json with the shape. --greedy N writes JSON {"tokens": [...], "margins": [...]}
(margin: top-1 minus top-2 logit at each step) to --greedy-out or stdout.
"""

import argparse
import json
import math
import os
import struct
import sys

import numpy as np

SAFETENSORS_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16, "F64": np.float64}


def read_safetensors(path):
    """name -> float32 array (bf16 and f16 widened exactly)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        base = 8 + n
    data = np.memmap(path, dtype=np.uint8, mode="r")
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        raw = np.frombuffer(data[base + begin:base + end], dtype=SAFETENSORS_DTYPES[info["dtype"]])
        if info["dtype"] == "BF16":
            arr = (raw.astype(np.uint32) << 16).view(np.float32)
        else:
            arr = raw.astype(np.float32)
        out[name] = arr.reshape(info["shape"])
    return out


def load_hf_dir(model_dir):
    with open(os.path.join(model_dir, "config.json")) as f:
        config = json.load(f)
    index = os.path.join(model_dir, "model.safetensors.index.json")
    weights = {}
    if os.path.exists(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    for name in files:
        weights.update(read_safetensors(os.path.join(model_dir, name)))
    return config, weights


def rope_inv_freq(config, head_dim):
    """transformers' _compute_default_rope_parameters + _compute_llama3_parameters."""
    base = config.get("rope_theta", 10000.0)
    inv_freq = 1.0 / (base**(np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
    scaling = config.get("rope_scaling") or {}
    rope_type = scaling.get("rope_type", scaling.get("type", "default"))
    if rope_type == "default":
        return inv_freq
    if rope_type == "linear":
        return inv_freq / scaling["factor"]
    if rope_type != "llama3":
        raise ValueError(f"rope_scaling type {rope_type!r} is not implemented in the reference")
    factor = scaling["factor"]
    low_freq_factor = scaling["low_freq_factor"]
    high_freq_factor = scaling["high_freq_factor"]
    old_context_len = scaling["original_max_position_embeddings"]
    low_freq_wavelen = old_context_len / low_freq_factor
    high_freq_wavelen = old_context_len / high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    inv_freq_llama = np.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_context_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    smoothed = (1 - smooth) * inv_freq_llama / factor + smooth * inv_freq_llama
    is_medium = ~(wavelen < high_freq_wavelen) & ~(wavelen > low_freq_wavelen)
    return np.where(is_medium, smoothed, inv_freq_llama)


def round_to(x, dtype):
    """Rounds float64 values to bf16/f16 precision (used only to estimate edgelm's error)."""
    if dtype is None:
        return x
    if dtype == "f16":
        return x.astype(np.float16).astype(np.float64)
    bits = x.astype(np.float32).view(np.uint32).astype(np.uint64)
    bits = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
    return bits.astype(np.uint32).view(np.float32).astype(np.float64)


class Model:
    """HF decoder in float64. emulate (only to choose test tolerances: how far may a legitimate
    lower-precision implementation drift?): None; "bf16" / "f16": round the inputs of every
    linear layer to that precision and keep K/V in f16; "kv-f16": only keep K/V in f16."""

    def __init__(self, config, weights, emulate=None):
        self.config = config
        self.emulate = emulate
        self.dim = config["hidden_size"]
        self.n_layers = config["num_hidden_layers"]
        self.n_heads = config["num_attention_heads"]
        self.n_kv_heads = config.get("num_key_value_heads") or self.n_heads
        self.head_dim = config.get("head_dim") or self.dim // self.n_heads
        self.eps = config.get("rms_norm_eps", 1e-6)
        self.vocab_size = config["vocab_size"]
        self.inv_freq = rope_inv_freq(config, self.head_dim)
        is_qwen2 = config.get("model_type") == "qwen2"
        self.attention_bias = is_qwen2 or bool(config.get("attention_bias", False))
        self.mlp_bias = bool(config.get("mlp_bias", False))

        def get(name, shape):
            if name not in weights:
                raise KeyError(f"missing tensor {name}")
            w = weights[name]
            if tuple(w.shape) != tuple(shape):
                raise ValueError(f"{name}: shape {tuple(w.shape)}, expected {tuple(shape)}")
            return np.asarray(w, dtype=np.float64)

        d, hd, nq, nkv = self.dim, self.head_dim, self.n_heads, self.n_kv_heads
        ffn = config["intermediate_size"]
        self.embed = get("model.embed_tokens.weight", (self.vocab_size, d))
        self.layers = []
        for i in range(self.n_layers):
            p = f"model.layers.{i}."
            layer = {
                "attn_norm": get(p + "input_layernorm.weight", (d,)),
                "q": get(p + "self_attn.q_proj.weight", (nq * hd, d)),
                "k": get(p + "self_attn.k_proj.weight", (nkv * hd, d)),
                "v": get(p + "self_attn.v_proj.weight", (nkv * hd, d)),
                "o": get(p + "self_attn.o_proj.weight", (d, nq * hd)),
                "ffn_norm": get(p + "post_attention_layernorm.weight", (d,)),
                "gate": get(p + "mlp.gate_proj.weight", (ffn, d)),
                "up": get(p + "mlp.up_proj.weight", (ffn, d)),
                "down": get(p + "mlp.down_proj.weight", (d, ffn)),
            }
            if self.attention_bias:
                layer["q_bias"] = get(p + "self_attn.q_proj.bias", (nq * hd,))
                layer["k_bias"] = get(p + "self_attn.k_proj.bias", (nkv * hd,))
                layer["v_bias"] = get(p + "self_attn.v_proj.bias", (nkv * hd,))
            if self.mlp_bias:
                layer["gate_bias"] = get(p + "mlp.gate_proj.bias", (ffn,))
                layer["up_bias"] = get(p + "mlp.up_proj.bias", (ffn,))
                layer["down_bias"] = get(p + "mlp.down_proj.bias", (d,))
            self.layers.append(layer)
        self.norm = get("model.norm.weight", (d,))
        if config.get("tie_word_embeddings", False):
            self.lm_head = self.embed
        else:
            self.lm_head = get("lm_head.weight", (self.vocab_size, d))

    @classmethod
    def from_dir(cls, model_dir, emulate=None):
        config, weights = load_hf_dir(model_dir)
        return cls(config, weights, emulate)

    def rms_norm(self, x, w):
        variance = np.mean(x * x, axis=-1, keepdims=True)
        return w * (x / np.sqrt(variance + self.eps))

    def linear(self, x, w, b=None):
        y = round_to(x, self.emulate if self.emulate in ("bf16", "f16") else None) @ w.T
        return y if b is None else y + b

    def rope(self, x, positions):
        """x: [B, heads, T, hd]; HF apply_rotary_pos_emb with rotate_half."""
        freqs = np.outer(positions, self.inv_freq)  # [T, hd/2]
        emb = np.concatenate([freqs, freqs], axis=-1)
        cos, sin = np.cos(emb), np.sin(emb)
        half = self.head_dim // 2
        rotated = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
        return x * cos + rotated * sin

    def new_cache(self):
        return {"pos": 0, "k": [None] * self.n_layers, "v": [None] * self.n_layers}

    def forward(self, tokens, cache=None):
        """tokens: [B, T] ids appended after the cache's positions; returns logits [B, T, V]."""
        tokens = np.asarray(tokens, dtype=np.int64)
        if tokens.ndim == 1:
            tokens = tokens[None, :]
        if tokens.min() < 0 or tokens.max() >= self.vocab_size:
            raise ValueError("token id out of range")
        cache = cache if cache is not None else self.new_cache()
        B, T = tokens.shape
        past = cache["pos"]
        positions = np.arange(past, past + T, dtype=np.float64)
        hd, nq, nkv = self.head_dim, self.n_heads, self.n_kv_heads
        # Causal mask over [past + T] keys: query i sees keys 0 .. past + i.
        mask = np.triu(np.full((T, past + T), -np.inf), k=past + 1)
        x = self.embed[tokens]  # [B, T, D]
        for li, L in enumerate(self.layers):
            h = self.rms_norm(x, L["attn_norm"])
            q = self.linear(h, L["q"], L.get("q_bias")).reshape(B, T, nq, hd).transpose(0, 2, 1, 3)
            k = self.linear(h, L["k"], L.get("k_bias")).reshape(B, T, nkv, hd).transpose(0, 2, 1, 3)
            v = self.linear(h, L["v"], L.get("v_bias")).reshape(B, T, nkv, hd).transpose(0, 2, 1, 3)
            q = self.rope(q, positions)
            k = round_to(self.rope(k, positions), "f16" if self.emulate else None)
            v = round_to(v, "f16" if self.emulate else None)
            if cache["k"][li] is not None:
                k = np.concatenate([cache["k"][li], k], axis=2)
                v = np.concatenate([cache["v"][li], v], axis=2)
            cache["k"][li], cache["v"][li] = k, v
            group = nq // nkv  # repeat_kv: query head h uses kv head h // group
            k_rep = np.repeat(k, group, axis=1)
            v_rep = np.repeat(v, group, axis=1)
            scores = q @ k_rep.transpose(0, 1, 3, 2) / math.sqrt(hd) + mask
            scores -= scores.max(axis=-1, keepdims=True)
            probs = np.exp(scores)
            probs /= probs.sum(axis=-1, keepdims=True)
            attn = (probs @ v_rep).transpose(0, 2, 1, 3).reshape(B, T, nq * hd)
            x = x + self.linear(attn, L["o"])
            h = self.rms_norm(x, L["ffn_norm"])
            gate = self.linear(h, L["gate"], L.get("gate_bias"))
            up = self.linear(h, L["up"], L.get("up_bias"))
            act = gate / (1.0 + np.exp(-gate)) * up  # silu(gate) * up
            x = x + self.linear(act, L["down"], L.get("down_bias"))
        cache["pos"] = past + T
        return self.linear(self.rms_norm(x, self.norm), self.lm_head)

    def greedy(self, prompts, n_tokens):
        """prompts: [B, P] (equal lengths). Returns (prompt logits [B, P, V], tokens [B, n],
        margins [B, n]) where margins are top-1 minus top-2 logits of each chosen token."""
        prompts = np.asarray(prompts, dtype=np.int64)
        if prompts.ndim == 1:
            prompts = prompts[None, :]
        cache = self.new_cache()
        prompt_logits = self.forward(prompts, cache)
        last = prompt_logits[:, -1, :]
        tokens = [np.zeros((len(prompts), 0), dtype=np.int64)]
        margins = [np.zeros((len(prompts), 0))]
        for step in range(n_tokens):
            rows = np.arange(last.shape[0])
            first = last.argmax(axis=-1)
            others = last.copy()
            others[rows, first] = -np.inf
            second = others.argmax(axis=-1)
            tokens.append(first[:, None])
            margins.append((last[rows, first] - last[rows, second])[:, None])
            if step + 1 < n_tokens:
                last = self.forward(first[:, None], cache)[:, -1, :]
        return prompt_logits, np.concatenate(tokens, axis=1), np.concatenate(margins, axis=1)


def write_logits(path, logits):
    logits = np.ascontiguousarray(logits, dtype=np.float32)
    if path.endswith(".npy"):
        np.save(path, logits)
        return
    logits.astype("<f4").tofile(path)
    with open(path + ".json", "w") as f:
        json.dump({"shape": list(logits.shape), "dtype": "float32-le"}, f)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="HF directory (config.json + safetensors)")
    ap.add_argument("--tokens", required=True, help="comma-separated prompt token ids")
    ap.add_argument("--out", help="write all-position logits here (.npy or raw float32)")
    ap.add_argument("--greedy", type=int, default=0, help="greedy continuation length")
    ap.add_argument("--greedy-out", help="JSON file for the greedy tokens (default: stdout)")
    ap.add_argument("--emulate", choices=["bf16", "f16", "kv-f16"],
                    help="round activations like a reduced-precision implementation")
    args = ap.parse_args()
    tokens = [int(t) for t in args.tokens.split(",") if t.strip()]
    if not tokens:
        ap.error("--tokens is empty")
    model = Model.from_dir(args.model, args.emulate)
    logits, greedy, margins = model.greedy([tokens], args.greedy)
    if args.out:
        write_logits(args.out, logits[0])
    if args.greedy:
        result = json.dumps({"tokens": greedy[0].tolist(), "margins": margins[0].tolist()})
        if args.greedy_out:
            with open(args.greedy_out, "w") as f:
                f.write(result + "\n")
        else:
            print(result)
    if not args.out and not args.greedy:
        sys.exit("nothing to do: give --out and/or --greedy")


if __name__ == "__main__":
    main()
