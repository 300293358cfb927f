#!/usr/bin/python3
"""Writes a Hugging Face style checkpoint with random weights at the real shapes of a
Llama-family model (and optionally the same weights as GGUF v3).

Real weights cannot be downloaded in the test environment, so end-to-end tests run edgelm
on these files and compare against tests/reference/llama_reference.py.

Output directory (--out):
  config.json, generation_config.json, tokenizer.json, tokenizer_config.json,
  special_tokens_map.json, model.safetensors or model-0000K-of-0000N.safetensors +
  model.safetensors.index.json
--gguf FILE: the same values as GGUF v3, laid out as llama.cpp's convert_hf_to_gguf.py does:
  arch "llama" (q/k rows permuted to the interleaved RoPE layout) or "qwen2" (not permuted),
  2-D weights in the checkpoint dtype, 1-D tensors (norms, biases) in F32, llama3 RoPE
  scaling as the rope_freqs.weight tensor of per-frequency divisors.

Only the standard library and numpy are needed (Debian: /usr/bin/python3 with python3-numpy).
"""

import argparse
import json
import math
import os
import struct
import sys

import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_TOKENIZER = os.path.join(REPO_ROOT, "..", "shared", "tokenizers", "smollm2-135m-instruct",
                                 "tokenizer.json")

# Chat templates (Jinja) as shipped in the models' tokenizer_config.json, lightly simplified.
CHATML_SMOLLM = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
CHATML_QWEN = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}{%- else %}"
    "{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
    "assistant.<|im_end|>\\n' }}{%- endif %}{%- for message in messages %}"
    "{%- if not (message.role == 'system' and loop.first) %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}"
    "{%- endif %}{%- endfor %}{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}{%- endif %}")
ZEPHYR = (
    "{% for message in messages %}\n{% if message['role'] == 'user' %}\n"
    "{{ '<|user|>\\n' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'system' %}\n"
    "{{ '<|system|>\\n' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'assistant' %}\n"
    "{{ '<|assistant|>\\n'  + message['content'] + eos_token }}\n{% endif %}\n"
    "{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n"
    "{% endfor %}")
LLAMA3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ "
    "message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}")

SMOLLM_SPECIALS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<repo_name>", "<reponame>", "<file_sep>",
    "<filename>", "<gh_stars>", "<issue_start>", "<issue_comment>", "<issue_closed>",
    "<jupyter_start>", "<jupyter_text>", "<jupyter_code>", "<jupyter_output>", "<jupyter_script>",
    "<empty_output>"
]
LLAMA3_SPECIALS = [
    "<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>", "<|finetune_right_pad_id|>", "<|reserved_special_token_2|>",
    "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>", "<|python_tag|>"
]

# Real shapes and hyper-parameters. "specials_at" says where the special tokens live in the
# vocabulary (like the real tokenizers: SmolLM/TinyLlama at the bottom, Qwen/Llama 3 at the top).
PRESETS = {
    "smollm2-135m": dict(
        arch="llama", hidden=576, heads=9, kv_heads=3, ffn=1536, layers=30, vocab=49152,
        theta=1e5, eps=1e-5, tied=True, ctx=8192, qkv_bias=False, rope_scaling=None,
        specials=SMOLLM_SPECIALS, specials_at="bottom", bos="<|im_start|>", eos="<|im_end|>",
        pad="<|im_end|>", unk=None, add_bos=False, gen_eos=["<|im_end|>"],
        chat_template=CHATML_SMOLLM),
    "qwen2.5-0.5b": dict(
        arch="qwen2", hidden=896, heads=14, kv_heads=2, ffn=4864, layers=24, vocab=151936,
        theta=1e6, eps=1e-6, tied=True, ctx=32768, qkv_bias=True, rope_scaling=None,
        specials=["<|endoftext|>", "<|im_start|>", "<|im_end|>"], specials_at="top",
        bos=None, config_bos="<|endoftext|>", eos="<|im_end|>", pad="<|endoftext|>", unk=None,
        add_bos=False, gen_eos=["<|im_end|>", "<|endoftext|>"], chat_template=CHATML_QWEN),
    "tinyllama-1.1b": dict(
        arch="llama", hidden=2048, heads=32, kv_heads=4, ffn=5632, layers=22, vocab=32000,
        theta=1e4, eps=1e-5, tied=False, ctx=2048, qkv_bias=False, rope_scaling=None,
        specials=["<unk>", "<s>", "</s>"], specials_at="bottom", bos="<s>", eos="</s>",
        pad="</s>", unk="<unk>", add_bos=True, gen_eos=["</s>"], chat_template=ZEPHYR),
    "llama-3.2-1b": dict(
        arch="llama", hidden=2048, heads=32, kv_heads=8, ffn=8192, layers=16, vocab=128256,
        theta=5e5, eps=1e-5, tied=True, ctx=131072, qkv_bias=False, head_dim=64,
        rope_scaling=dict(factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0,
                          original_max_position_embeddings=8192, rope_type="llama3"),
        specials=LLAMA3_SPECIALS, specials_at="top", bos="<|begin_of_text|>", eos="<|eot_id|>",
        pad=None, unk=None, add_bos=True,
        gen_eos=["<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"], chat_template=LLAMA3),
}

# ggml type ids and GGUF value types (ggml/docs/gguf.md).
GGML_TYPES = {"f32": 0, "f16": 1, "bf16": 30}
GGUF_FILE_TYPES = {"f32": 0, "f16": 1, "bf16": 32}  # llama.cpp's LlamaFileType
SAFETENSORS_DTYPES = {"f32": "F32", "f16": "F16", "bf16": "BF16"}
GGUF_U32, GGUF_I32, GGUF_F32, GGUF_BOOL, GGUF_STRING, GGUF_ARRAY = 4, 5, 6, 7, 8, 9
GGUF_ALIGNMENT = 32


# ---------------------------------------------------------------------------------------------
# Numbers


def to_dtype(x, dtype):
    """float32 array -> stored array: float32, float16, or bfloat16 bits as uint16 (RNE)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if dtype == "f32":
        return x
    if dtype == "f16":
        return x.astype(np.float16)
    bits = x.view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16  # round to nearest even (no NaN here)
    return rounded.astype(np.uint16)


def stored_to_f32(a, dtype):
    if dtype == "bf16":
        return (a.astype(np.uint32) << 16).view(np.float32)
    return a.astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Weights


def hf_tensor_specs(cfg):
    """(HF name, shape, kind) in the order HF checkpoints list them."""
    d, hd = cfg["hidden_size"], cfg["head_dim"]
    nq, nkv, ffn = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["intermediate_size"]
    specs = [("model.embed_tokens.weight", (cfg["vocab_size"], d), "embed")]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        specs += [
            (p + "input_layernorm.weight", (d,), "norm"),
            (p + "self_attn.q_proj.weight", (nq * hd, d), "qk"),
            (p + "self_attn.k_proj.weight", (nkv * hd, d), "qk"),
            (p + "self_attn.v_proj.weight", (nkv * hd, d), "in"),
        ]
        if cfg["qkv_bias"]:
            specs += [
                (p + "self_attn.q_proj.bias", (nq * hd,), "bias"),
                (p + "self_attn.k_proj.bias", (nkv * hd,), "bias"),
                (p + "self_attn.v_proj.bias", (nkv * hd,), "bias"),
            ]
        specs += [
            (p + "self_attn.o_proj.weight", (d, nq * hd), "out"),
            (p + "post_attention_layernorm.weight", (d,), "norm"),
            (p + "mlp.gate_proj.weight", (ffn, d), "in"),
            (p + "mlp.up_proj.weight", (ffn, d), "in"),
            (p + "mlp.down_proj.weight", (d, ffn), "out"),
        ]
    specs.append(("model.norm.weight", (d,), "norm"))
    if not cfg["tie_word_embeddings"]:
        specs.append(("lm_head.weight", (cfg["vocab_size"], d), "embed"))
    return specs


def random_weights(cfg, dtype, seed):
    """Random values scaled so that every activation is O(1): inputs of linear layers have unit
    RMS after RMSNorm, so std 1/sqrt(fan_in) keeps q/k/v/gate/up O(1) (q/k a bit more, for
    peaked attention); o_proj and down_proj each add ~1 RMS to the residual stream.
    Embeddings are small like real ones (std 1/sqrt(hidden), so rms_norm_eps visibly matters in
    the first RMSNorm) and the final norm weight is ~3, so logits have std ~3: well separated
    maxima over thousands of tokens, and with tied embeddings the token's own embedding does
    not dominate (which would make every greedy step repeat the input token). Other norms are
    1 +- 0.1 and biases 0.2 so that they matter."""
    rng = np.random.default_rng(seed)
    d = cfg["hidden_size"]
    weights = {}
    for name, shape, kind in hf_tensor_specs(cfg):
        if kind == "norm":
            x = 1.0 + 0.1 * rng.standard_normal(shape, dtype=np.float32)
            if name == "model.norm.weight":
                x *= np.float32(3.0)
        elif kind == "bias":
            x = 0.2 * rng.standard_normal(shape, dtype=np.float32)
        else:
            fan_in = shape[1]
            std = {"embed": 1.0 / math.sqrt(d), "qk": 1.3 / math.sqrt(fan_in),
                   "in": 1.0 / math.sqrt(fan_in), "out": 1.6 / math.sqrt(fan_in)}[kind]
            x = rng.standard_normal(shape, dtype=np.float32)
            x *= np.float32(std)
        weights[name] = to_dtype(x, dtype)
    return weights


# ---------------------------------------------------------------------------------------------
# safetensors (https://github.com/huggingface/safetensors#format)


def write_safetensors(path, tensors, dtype):
    header, offset = {}, 0
    for name, a in tensors:
        header[name] = {"dtype": SAFETENSORS_DTYPES[dtype], "shape": list(a.shape),
                        "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
    header["__metadata__"] = {"format": "pt"}
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # HF pads the header to 8 bytes
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for _, a in tensors:
            f.write(np.ascontiguousarray(a).tobytes())


def write_hf_weights(out, weights, dtype, shards):
    items = list(weights.items())
    for name in list(os.listdir(out)):
        if name.endswith(".safetensors") or name == "model.safetensors.index.json":
            os.remove(os.path.join(out, name))
    if shards <= 1:
        write_safetensors(os.path.join(out, "model.safetensors"), items, dtype)
        return
    total = sum(a.nbytes for _, a in items)
    groups = [[] for _ in range(shards)]
    start = 0
    for item in items:  # keep the order; a tensor goes to the shard holding its middle byte
        middle = start + item[1].nbytes / 2
        groups[min(shards - 1, int(middle * shards / total))].append(item)
        start += item[1].nbytes
    if any(not g for g in groups):
        sys.exit(f"cannot split {len(items)} tensors into {shards} non-empty shards")
    weight_map = {}
    for k, group in enumerate(groups):
        fname = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
        write_safetensors(os.path.join(out, fname), group, dtype)
        for name, _ in group:
            weight_map[name] = fname
    with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)


# ---------------------------------------------------------------------------------------------
# Tokenizer: byte-level BPE cut from a real tokenizer.json (SmolLM2's by default)


def build_tokenizer(preset, vocab_size, source):
    with open(source, encoding="utf-8") as f:
        src = json.load(f)
    src_specials = {t["id"] for t in src["added_tokens"]}
    # The source's ordinary BPE tokens in id order (bytes first, then merges by rank).
    bpe = [tok for tok, i in sorted(src["model"]["vocab"].items(), key=lambda kv: kv[1])
           if i not in src_specials]
    specials = preset["specials"]
    if vocab_size - len(specials) < 256:
        sys.exit(f"--vocab {vocab_size} is too small (need >= {256 + len(specials)})")
    # If the source has fewer tokens than the model's vocab_size (e.g. Qwen2.5's 151936), the
    # tokenizer is shorter than the embedding, as in real checkpoints with padded vocabularies.
    bpe = bpe[:vocab_size - len(specials)]
    n_bpe = len(bpe)
    if preset["specials_at"] == "bottom":
        tokens = specials + bpe
        special_ids = list(range(len(specials)))
    else:
        tokens = bpe + specials
        special_ids = list(range(n_bpe, n_bpe + len(specials)))
    vocab = {tok: i for i, tok in enumerate(tokens)}
    if len(vocab) != len(tokens):
        sys.exit("duplicate token strings in the generated vocabulary")
    kept = set(bpe)
    merges = []
    for m in src["model"]["merges"]:
        a, b = m.split(" ") if isinstance(m, str) else m
        if a in kept and b in kept and a + b in kept:
            merges.append(f"{a} {b}")
    added = [{"id": i, "content": tokens[i], "single_word": False, "lstrip": False,
              "rstrip": False, "normalized": False, "special": True} for i in special_ids]
    post = None
    if preset["add_bos"]:
        bos = preset["bos"]
        post = {"type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": bos, "type_id": 0}},
                           {"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [{"SpecialToken": {"id": bos, "type_id": 0}},
                         {"Sequence": {"id": "A", "type_id": 0}},
                         {"SpecialToken": {"id": bos, "type_id": 1}},
                         {"Sequence": {"id": "B", "type_id": 1}}],
                "special_tokens": {bos: {"id": bos, "ids": [vocab[bos]], "tokens": [bos]}}}
    model = dict(src["model"])
    model["vocab"] = vocab
    model["merges"] = merges
    tokenizer_json = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
                      "normalizer": src.get("normalizer"), "pre_tokenizer": src["pre_tokenizer"],
                      "post_processor": post, "decoder": src["decoder"], "model": model}
    return tokens, special_ids, merges, tokenizer_json


def write_tokenizer_files(out, preset, cfg, tokens, special_ids, tokenizer_json):
    vocab = {t: i for i, t in enumerate(tokens)}
    with open(os.path.join(out, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tokenizer_json, f, ensure_ascii=False, indent=1)
    config = {
        "add_bos_token": preset["add_bos"], "add_eos_token": False,
        "added_tokens_decoder": {
            str(i): {"content": tokens[i], "lstrip": False, "normalized": False, "rstrip": False,
                     "single_word": False, "special": True} for i in special_ids},
        "bos_token": preset["bos"], "eos_token": preset["eos"], "pad_token": preset["pad"],
        "unk_token": preset["unk"], "chat_template": preset["chat_template"],
        "clean_up_tokenization_spaces": False, "model_max_length": cfg["max_position_embeddings"],
        "tokenizer_class": "PreTrainedTokenizerFast",
    }
    with open(os.path.join(out, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, ensure_ascii=False, indent=2)
    special_map = {k + "_token": preset[k] for k in ("bos", "eos", "pad", "unk") if preset[k]}
    with open(os.path.join(out, "special_tokens_map.json"), "w", encoding="utf-8") as f:
        json.dump(special_map, f, indent=2)
    gen_eos = [vocab[t] for t in preset["gen_eos"]]
    gen = {"bos_token_id": cfg["bos_token_id"],
           "eos_token_id": gen_eos[0] if len(gen_eos) == 1 else gen_eos,
           "do_sample": True, "temperature": 0.6, "top_p": 0.9, "transformers_version": "4.45.0"}
    with open(os.path.join(out, "generation_config.json"), "w") as f:
        json.dump(gen, f, indent=2)


# ---------------------------------------------------------------------------------------------
# GGUF v3 (ggml/docs/gguf.md)


def gguf_string(s):
    b = s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


def gguf_kv(key, vtype, value):
    out = gguf_string(key) + struct.pack("<I", vtype)
    if vtype == GGUF_ARRAY:
        etype, items = value
        out += struct.pack("<IQ", etype, len(items))
        if etype == GGUF_STRING:
            out += b"".join(gguf_string(s) for s in items)
        else:
            fmt = {GGUF_I32: "<i", GGUF_U32: "<I", GGUF_F32: "<f"}[etype]
            out += b"".join(struct.pack(fmt, v) for v in items)
        return out
    if vtype == GGUF_STRING:
        return out + gguf_string(value)
    fmt = {GGUF_U32: "<I", GGUF_I32: "<i", GGUF_F32: "<f", GGUF_BOOL: "<?"}[vtype]
    return out + struct.pack(fmt, value)


def write_gguf(path, kvs, tensors):
    """kvs: [(key, type, value)]; tensors: [(name, row-major array, ggml type)]."""
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs))
    head += b"".join(gguf_kv(*kv) for kv in kvs)
    offset = 0
    for name, a, gtype in tensors:
        dims = list(reversed(a.shape))  # GGUF lists dims fastest-first
        head += gguf_string(name) + struct.pack("<I", len(dims))
        head += b"".join(struct.pack("<Q", n) for n in dims)
        head += struct.pack("<IQ", gtype, offset)
        offset += a.nbytes + (-a.nbytes % GGUF_ALIGNMENT)
    head += b"\0" * (-len(head) % GGUF_ALIGNMENT)
    with open(path, "wb") as f:
        f.write(head)
        for _, a, _ in tensors:
            f.write(np.ascontiguousarray(a).tobytes())
            f.write(b"\0" * (-a.nbytes % GGUF_ALIGNMENT))


def permute_for_interleaved_rope(w, n_head):
    """llama.cpp's LlamaModel.permute: HF rotate-half rows -> Meta's interleaved pairs."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(
        w.shape)


def llama3_rope_factors(cfg):
    """Divisors of each RoPE frequency, as convert_hf_to_gguf.py computes them."""
    rs = cfg["rope_scaling"]
    dim = cfg["head_dim"]
    freqs = 1.0 / (cfg["rope_theta"]**(np.arange(0, dim, 2, dtype=np.float32) / dim))
    factor, low, high = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
    old_ctx = rs["original_max_position_embeddings"]
    low_wavelen, high_wavelen = old_ctx / low, old_ctx / high
    out = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < high_wavelen:
            out.append(1.0)
        elif wavelen > low_wavelen:
            out.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


GGUF_NAMES = {
    "input_layernorm.weight": "attn_norm.weight", "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight", "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.q_proj.bias": "attn_q.bias", "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.bias": "attn_v.bias", "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight", "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight", "mlp.down_proj.weight": "ffn_down.weight",
}


def gguf_name(hf_name):
    if hf_name == "model.embed_tokens.weight":
        return "token_embd.weight"
    if hf_name == "model.norm.weight":
        return "output_norm.weight"
    if hf_name == "lm_head.weight":
        return "output.weight"
    parts = hf_name.split(".", 3)  # model.layers.N.rest
    return f"blk.{parts[2]}.{GGUF_NAMES[parts[3]]}"


def write_gguf_checkpoint(path, preset_name, preset, cfg, weights, dtype, tokens, special_ids,
                          merges):
    arch = preset["arch"]
    ctype = GGML_TYPES[dtype]
    tensors = []
    if cfg.get("rope_scaling"):
        tensors.append(("rope_freqs.weight", llama3_rope_factors(cfg), 0))
    for name, a in weights.items():
        if arch == "llama" and name.endswith(("q_proj.weight", "q_proj.bias")):
            a = permute_for_interleaved_rope(a, cfg["num_attention_heads"])
        elif arch == "llama" and name.endswith(("k_proj.weight", "k_proj.bias")):
            a = permute_for_interleaved_rope(a, cfg["num_key_value_heads"])
        if a.ndim == 1:  # norms and biases are F32 in llama.cpp's files
            tensors.append((gguf_name(name), stored_to_f32(a, dtype), 0))
        else:
            tensors.append((gguf_name(name), a, ctype))
    vocab = {t: i for i, t in enumerate(tokens)}
    specials = set(special_ids)
    # Like convert_hf_to_gguf: ids the tokenizer lacks become "[PAD<id>]" of type UNUSED.
    token_types = [3 if i in specials else 1 for i in range(len(tokens))]
    n_pad = cfg["vocab_size"] - len(tokens)
    tokens = tokens + [f"[PAD{i}]" for i in range(len(tokens), cfg["vocab_size"])]
    token_types += [5] * n_pad
    kvs = [
        ("general.architecture", GGUF_STRING, arch),
        ("general.type", GGUF_STRING, "model"),
        ("general.name", GGUF_STRING, f"random {preset_name}"),
        (f"{arch}.block_count", GGUF_U32, cfg["num_hidden_layers"]),
        (f"{arch}.context_length", GGUF_U32, cfg["max_position_embeddings"]),
        (f"{arch}.embedding_length", GGUF_U32, cfg["hidden_size"]),
        (f"{arch}.feed_forward_length", GGUF_U32, cfg["intermediate_size"]),
        (f"{arch}.attention.head_count", GGUF_U32, cfg["num_attention_heads"]),
        (f"{arch}.attention.head_count_kv", GGUF_U32, cfg["num_key_value_heads"]),
        (f"{arch}.rope.freq_base", GGUF_F32, float(cfg["rope_theta"])),
        (f"{arch}.attention.layer_norm_rms_epsilon", GGUF_F32, float(cfg["rms_norm_eps"])),
    ]
    if cfg.get("explicit_head_dim"):
        kvs += [(f"{arch}.attention.key_length", GGUF_U32, cfg["head_dim"]),
                (f"{arch}.attention.value_length", GGUF_U32, cfg["head_dim"])]
    kvs += [
        ("general.file_type", GGUF_U32, GGUF_FILE_TYPES[dtype]),
        (f"{arch}.vocab_size", GGUF_U32, cfg["vocab_size"]),
        (f"{arch}.rope.dimension_count", GGUF_U32, cfg["head_dim"]),
        ("general.quantization_version", GGUF_U32, 2),
        ("tokenizer.ggml.model", GGUF_STRING, "gpt2"),
        ("tokenizer.ggml.pre", GGUF_STRING, "smollm"),  # digits split + GPT-2 regex
        ("tokenizer.ggml.tokens", GGUF_ARRAY, (GGUF_STRING, tokens)),
        ("tokenizer.ggml.token_type", GGUF_ARRAY, (GGUF_I32, token_types)),
        ("tokenizer.ggml.merges", GGUF_ARRAY, (GGUF_STRING, merges)),
    ]
    bos = preset["bos"] or preset.get("config_bos")
    kvs.append(("tokenizer.ggml.bos_token_id", GGUF_U32, vocab[bos]))
    kvs.append(("tokenizer.ggml.eos_token_id", GGUF_U32, vocab[preset["eos"]]))
    if preset["unk"]:
        kvs.append(("tokenizer.ggml.unknown_token_id", GGUF_U32, vocab[preset["unk"]]))
    if preset["pad"]:
        kvs.append(("tokenizer.ggml.padding_token_id", GGUF_U32, vocab[preset["pad"]]))
    kvs.append(("tokenizer.ggml.add_bos_token", GGUF_BOOL, preset["add_bos"]))
    kvs.append(("tokenizer.ggml.add_eos_token", GGUF_BOOL, False))
    kvs.append(("tokenizer.chat_template", GGUF_STRING, preset["chat_template"]))
    write_gguf(path, kvs, tensors)


# ---------------------------------------------------------------------------------------------


def make_config(preset, layers, vocab_size, head_dim, dtype, tokens):
    vocab = {t: i for i, t in enumerate(tokens)}
    hd = head_dim or preset.get("head_dim") or preset["hidden"] // preset["heads"]
    bos = preset["bos"] or preset.get("config_bos")
    cfg = {
        "architectures": ["Qwen2ForCausalLM" if preset["arch"] == "qwen2" else "LlamaForCausalLM"],
        "model_type": preset["arch"],
        "hidden_size": preset["hidden"],
        "intermediate_size": preset["ffn"],
        "num_attention_heads": preset["heads"],
        "num_key_value_heads": preset["kv_heads"],
        "num_hidden_layers": layers,
        "vocab_size": vocab_size,
        "max_position_embeddings": preset["ctx"],
        "rms_norm_eps": preset["eps"],
        "rope_theta": preset["theta"],
        "rope_scaling": preset["rope_scaling"],
        "tie_word_embeddings": preset["tied"],
        "hidden_act": "silu",
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        "bos_token_id": vocab[bos],
        "eos_token_id": vocab[preset["eos"]],
        "torch_dtype": {"f32": "float32", "f16": "float16", "bf16": "bfloat16"}[dtype],
        "transformers_version": "4.45.0",
        "use_cache": True,
    }
    if preset["arch"] == "qwen2":
        cfg.update(use_sliding_window=False, sliding_window=preset["ctx"], max_window_layers=layers)
    else:
        cfg.update(attention_bias=False, mlp_bias=False, pretraining_tp=1)
    explicit = head_dim is not None or "head_dim" in preset
    if explicit:
        cfg["head_dim"] = hd
    # Internal fields (dropped before writing config.json).
    cfg["qkv_bias"] = preset["qkv_bias"]
    cfg["head_dim_internal"] = hd
    cfg["explicit_head_dim"] = explicit
    return cfg


def generate(preset_name, out, layers=None, vocab=None, dtype="f32", shards=1, seed=0,
             gguf=None, head_dim=None, tokenizer_source=DEFAULT_TOKENIZER, shape=None):
    """Writes the checkpoint; returns the config dict written to config.json. shape: optional
    overrides of the preset's hidden/heads/kv_heads/ffn/ctx (small variants for cheap tests)."""
    if preset_name not in PRESETS:
        sys.exit(f"unknown preset {preset_name!r}; known: {', '.join(PRESETS)}")
    preset = dict(PRESETS[preset_name])
    preset.update({k: v for k, v in (shape or {}).items() if v is not None})
    if preset["heads"] % preset["kv_heads"]:
        sys.exit("--heads must be a multiple of --kv-heads")
    layers = layers or preset["layers"]
    vocab_size = vocab or preset["vocab"]
    os.makedirs(out, exist_ok=True)
    tokens, special_ids, merges, tokenizer_json = build_tokenizer(preset, vocab_size,
                                                                  tokenizer_source)
    cfg = make_config(preset, layers, vocab_size, head_dim, dtype, tokens)
    internal = {"qkv_bias": cfg.pop("qkv_bias"), "head_dim": cfg.pop("head_dim_internal"),
                "explicit_head_dim": cfg.pop("explicit_head_dim")}
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    write_tokenizer_files(out, preset, cfg, tokens, special_ids, tokenizer_json)
    full = dict(cfg, **internal)
    weights = random_weights(full, dtype, seed)
    write_hf_weights(out, weights, dtype, shards)
    if gguf:
        write_gguf_checkpoint(gguf, preset_name, preset, full, weights, dtype, tokens,
                              special_ids, merges)
    return cfg


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", required=True, choices=sorted(PRESETS))
    ap.add_argument("--out", required=True, help="output directory (HF layout)")
    ap.add_argument("--layers", type=int, help="number of decoder layers (default: the model's)")
    ap.add_argument("--vocab", type=int, help="vocabulary size (default: the model's)")
    ap.add_argument("--dtype", default="f32", choices=["f32", "f16", "bf16"])
    ap.add_argument("--shards", type=int, default=1, help="number of safetensors files")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--head-dim", type=int, help="explicit head_dim (written to config.json)")
    ap.add_argument("--hidden", type=int, help="override hidden_size (small variants)")
    ap.add_argument("--heads", type=int, help="override num_attention_heads")
    ap.add_argument("--kv-heads", type=int, help="override num_key_value_heads")
    ap.add_argument("--ffn", type=int, help="override intermediate_size")
    ap.add_argument("--gguf", help="also write the same weights as this GGUF v3 file")
    ap.add_argument("--tokenizer-source", default=DEFAULT_TOKENIZER,
                    help="byte-level BPE tokenizer.json to cut the vocabulary from")
    args = ap.parse_args()
    if args.shards < 1:
        ap.error("--shards must be >= 1")
    shape = {"hidden": args.hidden, "heads": args.heads, "kv_heads": args.kv_heads,
             "ffn": args.ffn}
    generate(args.preset, args.out, args.layers, args.vocab, args.dtype, args.shards, args.seed,
             args.gguf, args.head_dim, args.tokenizer_source, shape)


if __name__ == "__main__":
    main()
