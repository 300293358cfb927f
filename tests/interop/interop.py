#!/usr/bin/env python3
"""edgelm <-> llama.cpp interoperability check; run it through tests/interop/run.sh.

For every model and quantization type:
  (1) `edgelm quantize` writes the file; llama.cpp and edgelm decode it greedily.
  (2) llama.cpp's llama_model_quantize writes the file (same input values); both decode it.
  (3) the files of (1) and (2): same tensor types and bytes? same metadata values?
With --gptq-text, also files `edgelm quantize --gptq` writes (GPTQ_TYPES): decoded as in (1).
Decoding: BOS + prompt, then N greedy tokens in each engine ("tokens": equal or not), and
edgelm fed llama.cpp's tokens (teacher forcing), so the logits of every step are compared on
the same context ("top-1": argmax agreement, "max|d|": largest logit difference).

Fails (exit 1) on: different prompt token ids; max|d| above --tolerance on any step; greedy
tokens that part where the two candidates are not a near-tie (their logit difference, summed
over both engines, above --tolerance); `edgelm run --temp 0` printing other text than the API;
different tensor types or bytes; a metadata key both files have with different values
(general.name aside).

Why a tolerance at all: quantized matmuls quantize their input activations (Q8_0 / Q8_K, as
in ggml), and rounding is discontinuous, so float-order differences (flash attention's F16
rounding, summation order) flip single activation codes and the logits of the two engines
differ by about as much as each differs from exact arithmetic on the same weights (0.1-0.5
here). A layout or metadata bug (q/k permutation, rope type, norm epsilon, scales) gives
differences of several logits. Random-weight models have near-tie logits, so their greedy
runs may part at such a step; that is reported as "tie@step".

Needs numpy (Debian: /usr/bin/python3 with python3-numpy).
"""
import argparse
import os
import subprocess
import sys
import time

import numpy as np

# (edgelm --type, llama_ftype id or None). llama.cpp has no plain Q4_K/Q5_K ftype: its
# LLAMA_FTYPE_MOSTLY_Q4_K_S/Q5_K_S are mixes, which edgelm calls q4_k_s/q5_k_s.
TYPES = [
    ("q8_0", 7),
    ("q4_0", 2),
    ("q4_k", None),
    ("q4_k_s", 14),
    ("q4_k_m", 15),
    ("q5_k", None),
    ("q5_k_s", 16),
    ("q6_k", 18),
]

# Types also written with `--gptq` (when --gptq-text is given): the same formats, other levels.
GPTQ_TYPES = ["q4_0", "q4_k_m"]


def run(cmd):
    # Random-weight models print partial UTF-8: keep the bytes (surrogateescape).
    result = subprocess.run(cmd, capture_output=True, encoding="utf-8", errors="surrogateescape")
    if result.returncode != 0:
        sys.exit(f"interop: command failed ({result.returncode}): {' '.join(cmd)}\n"
                 f"{result.stdout[-2000:]}{result.stderr[-4000:]}")
    return result.stdout


def parse_ids(output, label):
    for line in output.splitlines():
        if line.startswith(label + ":"):
            return [int(x) for x in line[len(label) + 1:].split()]
    sys.exit(f"interop: no '{label}:' line in\n{output}")


def as_text(s):
    """The valid UTF-8 of s. edgelm's streaming output writes U+FFFD for bytes that form no
    character, Model::detokenize keeps them raw, and the two count U+FFFD differently."""
    return s.encode("utf-8", "surrogateescape").decode("utf-8", "replace").replace("\ufffd", "")


class Check:
    def __init__(self, args):
        self.args = args

    def decode(self, engine, model, prompt, forced=None):
        """Returns (prompt ids, argmax tokens, logits [N, vocab], stdout)."""
        if engine == "llama.cpp":
            cmd = [self.args.llama_driver, "greedy"]
        else:
            cmd = [self.args.greedy]
        logits_path = os.path.join(self.args.work, "logits.f32")
        cmd += [model, prompt, str(self.args.tokens), logits_path]
        if forced:
            cmd.append(",".join(map(str, forced)))
        out = run(cmd)
        logits = np.fromfile(logits_path, dtype=np.float32).reshape(self.args.tokens, -1)
        os.remove(logits_path)
        return parse_ids(out, "prompt"), parse_ids(out, "tokens"), logits, out

    def compare_decoding(self, model, prompt, check_cli):
        tol = self.args.tolerance
        l_prompt, l_tokens, l_logits, _ = self.decode("llama.cpp", model, prompt)
        e_prompt, e_tokens, _, e_out = self.decode("edgelm", model, prompt)
        _, _, f_logits, _ = self.decode("edgelm", model, prompt, forced=l_tokens)
        r = {"problems": [], "info": []}
        if l_prompt != e_prompt:
            r["problems"].append(f"prompt ids differ: llama.cpp {l_prompt}, edgelm {e_prompt}")
        diff = np.abs(l_logits - f_logits)
        r["max_diff"] = float(diff.max())
        r["top1"] = float(np.mean(l_logits.argmax(1) == f_logits.argmax(1)))
        if r["max_diff"] > tol:
            step = int(diff.max(1).argmax())
            r["problems"].append(f"logits differ by {r['max_diff']:.3g} > {tol} at step {step} "
                                 f"(same context)")
        part = next((i for i, (a, b) in enumerate(zip(l_tokens, e_tokens)) if a != b), None)
        r["tokens"] = "same" if part is None else f"tie@{part}"
        if part is not None:
            # Both engines' preference between the two candidates at the step where they part:
            # edgelm's logits there come from the forced run (same context, as the tokens agree).
            a, b = l_tokens[part], e_tokens[part]
            margin = (l_logits[part, a] - l_logits[part, b]) + (f_logits[part, b] - f_logits[part, a])
            r["info"].append(f"greedy tokens part at step {part}: llama.cpp {a}, edgelm {b}, "
                             f"margins summed over both engines {margin:.3g}")
            if margin > tol:
                r["tokens"] = f"PART@{part}"
                r["problems"].append(f"greedy tokens part at step {part} without a near-tie "
                                     f"(margin {margin:.3g} > {tol})\n    llama.cpp {l_tokens}"
                                     f"\n    edgelm    {e_tokens}")
        if check_cli:
            cli = run([self.args.edgelm, "run", "-m", model, "-p", prompt, "--temp", "0",
                       "--repeat-penalty", "1", "--ignore-eos", "-n", str(self.args.tokens),
                       "-t", "1", "--kv-type", "f32" if os.environ.get("INTEROP_KV_F32") else "f16"])
            # The text (printed last) may hold newlines and other line breaks.
            api = e_out.split("\ntext: ", 1)[1]
            if as_text(cli) != as_text(api):
                r["problems"].append("`edgelm run --temp 0` printed other text than the API")
        return r

    def listing(self, what, path):
        rows = {}
        for line in run([self.args.llama_driver, what, path]).splitlines():
            key, rest = line.split(" ", 1)
            rows[key] = rest
        return rows

    def compare_files(self, e_file, l_file):
        r = {"problems": [], "info": []}
        e, l = self.listing("tensors", e_file), self.listing("tensors", l_file)
        if set(e) != set(l):
            r["problems"].append(f"tensor names differ: only edgelm {sorted(set(e) - set(l))}, "
                                 f"only llama.cpp {sorted(set(l) - set(e))}")
        same = 0
        for name in sorted(set(e) & set(l)):
            e_type, l_type = e[name].split()[0], l[name].split()[0]
            if e_type != l_type:
                r["problems"].append(f"{name}: edgelm {e_type}, llama.cpp {l_type}")
            elif e[name] != l[name]:
                r["problems"].append(f"{name} ({e_type}): different bytes")
            else:
                same += 1
        r["bytes"] = f"{same}/{len(l)}"
        counts = {}
        for row in e.values():
            counts[row.split()[0]] = counts.get(row.split()[0], 0) + 1
        r["types"] = ", ".join(f"{t}: {c}" for t, c in sorted(counts.items()))

        e, l = self.listing("kv", e_file), self.listing("kv", l_file)
        differ = [k for k in sorted(set(e) & set(l)) if e[k] != l[k] and k != "general.name"]
        for k in differ:
            r["problems"].append(f"metadata {k}: edgelm {e[k]}, llama.cpp {l[k]}")
        only_e, only_l = sorted(set(e) - set(l)), sorted(set(l) - set(e))
        r["kv"] = f"{len(set(e) & set(l)) - len(differ)}/{len(set(e) & set(l))}"
        if only_e:
            r["info"].append("metadata only in edgelm's file: " + ", ".join(only_e))
        if only_l:
            r["info"].append("metadata only in llama.cpp's file: " +
                             ", ".join(f"{k} {l[k]}" for k in only_l))
        return r


def cell(r):
    if r is None:
        return "-"
    return f"{r['tokens']}, {100 * r['top1']:.0f}%, {r['max_diff']:.2f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--edgelm", required=True)
    parser.add_argument("--greedy", required=True, help="edgelm_interop_greedy")
    parser.add_argument("--llama-driver", required=True)
    parser.add_argument("--work", required=True, help="scratch folder for the model files")
    parser.add_argument("--model", action="append", required=True,
                        help="NAME|EDGELM_INPUT|LLAMA_INPUT_GGUF|PROMPT (repeatable)")
    parser.add_argument("--gptq-text", help="calibration text: also check files quantized "
                        "with `--gptq` (edgelm only: llama.cpp has no GPTQ) in both engines")
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--tolerance", type=float, default=1.0, help="logits")
    args = parser.parse_args()
    check = Check(args)

    rows, notes, failures = [], [], []

    def record(label, r):
        notes.extend(f"{label}: {i}" for i in r["info"])
        failures.extend(f"{label}: {p}" for p in r["problems"])

    for spec in args.model:
        name, edgelm_input, llama_input, prompt = spec.split("|", 3)
        start = time.time()
        base = check.compare_decoding(llama_input, prompt, check_cli=True)
        record(f"{name} unquantized", base)
        rows.append((name, "(input)", cell(base), "-", "-", "-", ""))
        for etype, ftype in TYPES:
            e_file = os.path.join(args.work, f"{name}-edgelm-{etype}.gguf")
            run([args.edgelm, "quantize", edgelm_input, e_file, "--type", etype, "--threads", "1"])
            d1 = check.compare_decoding(e_file, prompt, check_cli=True)
            record(f"{name} {etype} (1)", d1)
            d2 = files = None
            if ftype is not None:
                l_file = os.path.join(args.work, f"{name}-llama-{etype}.gguf")
                run([args.llama_driver, "quantize", llama_input, l_file, str(ftype)])
                d2 = check.compare_decoding(l_file, prompt, check_cli=False)
                record(f"{name} {etype} (2)", d2)
                files = check.compare_files(e_file, l_file)
                record(f"{name} {etype} (3)", files)
                os.remove(l_file)
            else:
                files = check.compare_files(e_file, e_file)  # for the type counts only
            os.remove(e_file)
            rows.append((name, etype, cell(d1), cell(d2), files["bytes"] if ftype else "-",
                         files["kv"] if ftype else "-", files["types"]))
        for etype in GPTQ_TYPES if args.gptq_text else []:
            e_file = os.path.join(args.work, f"{name}-edgelm-{etype}-gptq.gguf")
            run([args.edgelm, "quantize", edgelm_input, e_file, "--type", etype, "--threads", "1",
                 "--gptq", args.gptq_text, "--gptq-ctx", "64", "--gptq-chunks", "8"])
            d1 = check.compare_decoding(e_file, prompt, check_cli=False)
            record(f"{name} {etype} --gptq (1)", d1)
            files = check.compare_files(e_file, e_file)  # for the type counts only
            os.remove(e_file)
            rows.append((name, etype + " --gptq", cell(d1), "-", "-", "-", files["types"]))
        print(f"[{name}: {time.time() - start:.1f} s]", file=sys.stderr)

    print(f"\n{args.tokens} greedy tokens after BOS + prompt. Decoding cells: greedy tokens "
          "(same / tie@step), top-1 agreement and max |logit difference| with edgelm fed "
          "llama.cpp's tokens.")
    header = ("model", "type", "(1) edgelm-quantized", "(2) llama.cpp-quantized",
              "(3) same bytes", "same metadata", "tensors of (1)")
    table = [header] + rows
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    seen = set()
    for note in notes:
        # Metadata notes repeat for every type of a model: print each once.
        key = note.split(": ", 1)[1] if "metadata" in note else note
        if key not in seen:
            seen.add(key)
            print(f"note: {note}")
    for failure in failures:
        print(f"MISMATCH {failure}")
    if failures:
        print(f"\ninterop: {len(failures)} mismatch(es)")
        return 1
    print("\ninterop: edgelm and llama.cpp agree on every file")
    return 0


if __name__ == "__main__":
    sys.exit(main())
