#!/usr/bin/env python3
"""Check an AutoAWQ "GEMM" int4 Mixtral checkpoint with code that shares nothing with the MixQ engine.

What it does, per checkpoint folder:
  1. Strict format checks, the ones a loader (AutoAWQ, vLLM, transformers) relies on: safetensors headers and
     byte ranges, the sharding index against the shards, quantization_config fields, the set of tensors each
     module must have (qweight int32 [in, out/8], qzeros int32 [in/group, out/8], scales fp16 [in/group, out],
     no leftover `.weight` for a quantized Linear, 16-bit embeddings/norms/router/lm_head), and that
     modules_to_not_convert covers exactly the Linears left in 16 bits (the router).
  2. Dequantizes every quantized Linear by the published format facts alone (docs: FIELD-NOTES.md, "The AWQ
     GEMM checkpoint format"): nibble slot i (bits 4i..4i+3) of word c holds output column 8c + ORDER[i],
     ORDER = [0, 2, 4, 6, 1, 3, 5, 7]; w[i][o] = (q[i][o] - z[i/g][o]) * s[i/g][o], in float32.
  3. Writes the result as a plain float32 Hugging Face folder (original module names, `.weight`), loads it
     with transformers' own MixtralForCausalLM.from_pretrained (float32, eager attention), and compares what
     transformers computes with what the MixQ engine recorded (scripts/interop/engine_side.mjs → ours.json):
     perplexity over the held-out windows (total and per window), per-position log-probabilities of the
     prompts, log-probabilities at the last prompt position, greedy continuations and argmax.
Optionally (--source) compares 16-bit tensors and reconstructed weights with the unquantized source model; a
checkpoint whose NAME starts with "rtn" is taken as round-to-nearest (no scaling, no clipping) and each of its
weights must then lie within one quantization step of the source.

Usage (torch + transformers needed for 3; 1, 2 and --self-test need only numpy):
  python3 scripts/interop/check_awq_checkpoint.py --self-test
  python3 scripts/interop/check_awq_checkpoint.py --format-only CKPT_DIR [CKPT_DIR ...]
  python3 scripts/interop/check_awq_checkpoint.py --ours .interop/pack/ours.json \
      --ids .interop/pack/valid_ids.safetensors --source models/mixq-tiny-code \
      --baseline models/mixq-tiny-code --figures .interop/pack/reference-figures.json \
      rtn-g128=DIR awq-g128=DIR [--out report.json] [--device cpu]
Exit status: 0 when every check passed, 1 when one failed, 2 on bad usage, 77 when inputs are missing.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import struct
import sys
import tempfile
import time

import numpy as np

# ---------------------------------------------------------------------------------------------------------
# Format facts (FIELD-NOTES.md). ORDER[i] = the output column (within a group of 8) held by nibble slot i.
AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)
# Inverse permutation: the slot holding column j. Derived from ORDER, checked against the published table.
AWQ_SLOT_OF_COLUMN = tuple(int(s) for s in np.argsort(AWQ_ORDER))
assert AWQ_SLOT_OF_COLUMN == (0, 4, 1, 5, 2, 6, 3, 7)

# Tolerances of the comparisons with the engine (see README.md for why these values).
PPL_REL_TOL = 1e-5        # perplexity and per-window mean NLL, relative
LOGPROB_REL_TOL = 1e-4    # |Δ log p| divided by the spread (max − min) of that position's logits
ARGMAX_TIE_MARGIN = 1e-3  # top-1 minus top-2 logit below this: a near-tie, the argmax may legitimately differ
ROUTER_REL_TOL = 1e-2     # effective router (gate ⊙ norm) vs source: two bf16 roundings ≈ 2·2^-9


# ---------------------------------------------------------------------------------------------------------
# safetensors, read and written here (no library): 8-byte little-endian header length N, N bytes of JSON
# {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__"?}, then the data; offsets are relative
# to the data region.
DTYPES = {  # safetensors dtype → (numpy dtype as stored, bytes per element)
    "F32": (np.float32, 4), "F16": (np.float16, 2), "BF16": (np.uint16, 2), "I32": (np.int32, 4),
    "I64": (np.int64, 8), "I16": (np.int16, 2), "I8": (np.int8, 1), "U8": (np.uint8, 1), "F64": (np.float64, 8),
}


class SafetensorsFile:
    """One .safetensors file, header validated; tensors read on demand as numpy arrays (BF16 as raw uint16)."""

    def __init__(self, path: str):
        self.path = path
        self.problems: list[str] = []
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > size - 8:
                raise ValueError(f"{path}: header length {n} exceeds the file ({size} bytes)")
            header = json.loads(f.read(n))
        self.metadata = header.pop("__metadata__", {})
        self.entries = header
        self.data_start = 8 + n
        data_len = size - self.data_start
        spans = []
        for name, e in header.items():
            dtype, shape, (b, en) = e["dtype"], e["shape"], e["data_offsets"]
            if dtype not in DTYPES:
                self.problems.append(f"{name}: unsupported dtype {dtype}")
                continue
            want = DTYPES[dtype][1] * math.prod(shape)
            if en - b != want:
                self.problems.append(f"{name}: {en - b} bytes for {dtype} {shape} (needs {want})")
            if b < 0 or en > data_len:
                self.problems.append(f"{name}: bytes [{b}, {en}) outside the data region ({data_len} bytes)")
            spans.append((b, en, name))
        spans.sort()
        pos = 0
        for b, en, name in spans:  # the format requires the data region to be covered without holes or overlap
            if b != pos:
                self.problems.append(f"{name}: starts at {b}, previous tensor ends at {pos} (hole or overlap)")
            pos = max(pos, en)
        if pos != data_len:
            self.problems.append(f"data region is {data_len} bytes, tensors cover {pos}")

    def read(self, name: str) -> np.ndarray:
        e = self.entries[name]
        np_dtype, width = DTYPES[e["dtype"]]
        b, en = e["data_offsets"]
        with open(self.path, "rb") as f:
            f.seek(self.data_start + b)
            buf = f.read(en - b)
        return np.frombuffer(buf, dtype=np.dtype(np_dtype).newbyteorder("<")).reshape(e["shape"]).copy()

    def read_float32(self, name: str) -> np.ndarray:
        """A 16/32-bit float tensor as float32, exactly (bf16 is the top half of a float32)."""
        dtype = self.entries[name]["dtype"]
        raw = self.read(name)
        if dtype == "BF16":
            return (raw.astype(np.uint32) << 16).view(np.float32)
        if dtype in ("F16", "F32"):
            return raw.astype(np.float32)
        raise ValueError(f"{self.path}: {name} is {dtype}, not a float tensor")


def write_safetensors(path: str, tensors: dict) -> None:
    """Tensors → one .safetensors file (header padded with spaces to a multiple of 8).

    A value is a float32/float16/int32 array, or (dtype, array) to name the dtype, e.g. ("BF16", raw uint16).
    """
    rev = {np.dtype(np.float32): "F32", np.dtype(np.int32): "I32", np.dtype(np.float16): "F16"}
    header, pos, blobs = {"__metadata__": {"format": "pt"}}, 0, []  # transformers checks "format"
    for name, a in tensors.items():
        dtype, a = a if isinstance(a, tuple) else (rev[np.asarray(a).dtype], a)
        a = np.ascontiguousarray(a)
        header[name] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [pos, pos + a.nbytes]}
        pos += a.nbytes
        blobs.append(a)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for a in blobs:
            f.write(a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes())


# ---------------------------------------------------------------------------------------------------------
# The packing, by the format's definition.
def unpack_awq(words: np.ndarray) -> np.ndarray:
    """int32 [rows, cols/8] → uint8 [rows, cols]: column 8c + j is nibble slot AWQ_SLOT_OF_COLUMN[j] of word c."""
    u = words.astype(np.int64) & 0xFFFFFFFF  # two's complement → unsigned, so shifts bring no sign bits
    slots = np.stack([(u >> (4 * i)) & 0xF for i in range(8)], axis=-1)  # [rows, cols/8, slot]
    cols = slots[..., list(AWQ_SLOT_OF_COLUMN)]                          # [rows, cols/8, j]
    return cols.reshape(words.shape[0], words.shape[1] * 8).astype(np.uint8)


def pack_awq_naive(values: np.ndarray) -> np.ndarray:
    """uint8 [rows, cols] (0..15) → int32 [rows, cols/8], element by element (the oracle for the self-test)."""
    rows, cols = values.shape
    out = np.zeros((rows, cols // 8), dtype=np.int64)
    for r in range(rows):
        for c in range(cols // 8):
            word = 0
            for i in range(8):
                word |= int(values[r, 8 * c + AWQ_ORDER[i]]) << (4 * i)
            out[r, c] = word - (1 << 32) if word >= (1 << 31) else word
    return out.astype(np.int32)


def dequantize(qweight: np.ndarray, qzeros: np.ndarray, scales_f16: np.ndarray, group: int) -> np.ndarray:
    """AWQ GEMM tensors → float32 weight [out, in] as nn.Linear stores it.

    qweight int32 [in, out/8]; qzeros int32 [in/group, out/8]; scales fp16 [in/group, out].
    w[i][o] = (q[i][o] − z[i/group][o]) · s[i/group][o]; every product is exact in float32 (|q − z| ≤ 15,
    s has 11 significant bits), so any correct reader gets these exact values.
    """
    q = unpack_awq(qweight).astype(np.float32)                       # [in, out]
    z = np.repeat(unpack_awq(qzeros).astype(np.float32), group, 0)   # [in, out]
    s = np.repeat(scales_f16.astype(np.float32), group, 0)           # [in, out]
    return np.ascontiguousarray(((q - z) * s).T)


def self_test() -> list[str]:
    """Known words and round trips for the packing; returns failures."""
    fails = []
    # Columns 0..7 holding the values 0..7: slot i holds column ORDER[i], so the nibbles read 0,2,4,6,1,3,5,7
    # from the least significant end: 0x75316420.
    ramp = np.arange(8, dtype=np.uint8).reshape(1, 8)
    if int(pack_awq_naive(ramp)[0, 0]) != 0x75316420:
        fails.append(f"pack of 0..7 gave {int(pack_awq_naive(ramp)[0, 0]):#x}, expected 0x75316420")
    # Column 1 alone set to 15: slot 4 (bits 16..19) → 0x000F0000.
    one = np.zeros((1, 8), dtype=np.uint8)
    one[0, 1] = 15
    if int(pack_awq_naive(one)[0, 0]) != 0x000F0000:
        fails.append(f"column 1 = 15 packed to {int(pack_awq_naive(one)[0, 0]):#x}, expected 0xf0000")
    # The top nibble set makes the int32 negative: 15 in column 7 (slot 7) → 0xF0000000 = −268435456.
    top = np.zeros((1, 8), dtype=np.uint8)
    top[0, 7] = 15
    if int(pack_awq_naive(top)[0, 0]) != -268435456:
        fails.append(f"column 7 = 15 packed to {int(pack_awq_naive(top)[0, 0])}, expected -268435456")
    if not np.array_equal(unpack_awq(np.array([[0x75316420]], dtype=np.int32)), ramp):
        fails.append("unpack of 0x75316420 is not 0..7")
    rng = np.random.default_rng(0)
    vals = rng.integers(0, 16, size=(24, 64), dtype=np.uint8)
    if not np.array_equal(unpack_awq(pack_awq_naive(vals)), vals):
        fails.append("unpack(pack(random)) differs")
    # Dequantization on a hand-computed case: group 2, one output column group of 8.
    q = np.array([[3] * 8, [15] * 8, [0] * 8, [7] * 8], dtype=np.uint8)
    z = np.array([[8] * 8, [1] * 8], dtype=np.uint8)
    s = np.array([[0.5] * 8, [0.25] * 8], dtype=np.float16)
    w = dequantize(pack_awq_naive(q), pack_awq_naive(z), s, 2)      # [out 8, in 4]
    want = np.array([(3 - 8) * 0.5, (15 - 8) * 0.5, (0 - 1) * 0.25, (7 - 1) * 0.25], dtype=np.float32)
    if w.shape != (8, 4) or not np.array_equal(w, np.tile(want, (8, 1))):
        fails.append(f"dequantize gave {w[0].tolist()}, expected {want.tolist()}")
    return fails


# ---------------------------------------------------------------------------------------------------------
# A checkpoint folder.
class Checkpoint:
    def __init__(self, folder: str):
        self.folder = folder
        with open(os.path.join(folder, "config.json")) as f:
            self.config = json.load(f)
        self.problems: list[str] = []   # format violations (fail)
        self.notes: list[str] = []      # facts worth knowing that are not violations
        self.files: dict[str, SafetensorsFile] = {}
        self.where: dict[str, str] = {}  # tensor name → shard file name
        index_path = os.path.join(folder, "model.safetensors.index.json")
        if os.path.exists(index_path):
            with open(index_path) as f:
                index = json.load(f)
            weight_map = index.get("weight_map", {})
            shards = sorted(set(weight_map.values()))
            on_disk = sorted(n for n in os.listdir(folder) if n.endswith(".safetensors"))
            for n in on_disk:
                if n not in shards:
                    self.problems.append(f"index: shard {n} is on disk but not in weight_map")
            for n in shards:
                if not os.path.exists(os.path.join(folder, n)):
                    self.problems.append(f"index: weight_map names {n}, which does not exist")
            self._open(n for n in shards if os.path.exists(os.path.join(folder, n)))
            for name, shard in weight_map.items():
                if self.where.get(name) != shard:
                    self.problems.append(f"index: {name} mapped to {shard}, found in {self.where.get(name)}")
            for name in self.where:
                if name not in weight_map:
                    self.problems.append(f"index: {name} is in {self.where[name]} but not in weight_map")
            total = sum(DTYPES[e["dtype"]][1] * math.prod(e["shape"])
                        for sf in self.files.values() for e in sf.entries.values() if e["dtype"] in DTYPES)
            declared = index.get("metadata", {}).get("total_size")
            if declared is None:
                self.notes.append("index: metadata.total_size absent")
            elif declared != total:
                self.problems.append(f"index: metadata.total_size {declared} != {total} bytes of tensors")
        elif os.path.exists(os.path.join(folder, "model.safetensors")):
            self._open(["model.safetensors"])
        else:
            self.problems.append("no model.safetensors and no model.safetensors.index.json")

    def _open(self, names) -> None:
        for n in names:
            sf = SafetensorsFile(os.path.join(self.folder, n))
            self.files[n] = sf
            self.problems += [f"{n}: {p}" for p in sf.problems]
            for t in sf.entries:
                if t in self.where:
                    self.problems.append(f"{t} is stored twice ({self.where[t]} and {n})")
                self.where[t] = n

    def dtype(self, name: str) -> str:
        return self.files[self.where[name]].entries[name]["dtype"]

    def shape(self, name: str) -> list[int]:
        return self.files[self.where[name]].entries[name]["shape"]

    def read(self, name: str) -> np.ndarray:
        return self.files[self.where[name]].read(name)

    def read_float32(self, name: str) -> np.ndarray:
        return self.files[self.where[name]].read_float32(name)


def mixtral_modules(cfg: dict):
    """(16-bit tensors {name: shape}, Linears {module: (out, in)}) of a Mixtral config, router included."""
    hidden, inter = cfg["hidden_size"], cfg["intermediate_size"]
    heads, kv = cfg["num_attention_heads"], cfg.get("num_key_value_heads", cfg["num_attention_heads"])
    head_dim = cfg.get("head_dim") or hidden // heads
    experts, vocab = cfg["num_local_experts"], cfg["vocab_size"]
    plain = {"model.embed_tokens.weight": [vocab, hidden], "model.norm.weight": [hidden]}
    if not cfg.get("tie_word_embeddings", False):
        plain["lm_head.weight"] = [vocab, hidden]
    linears = {}
    for layer in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{layer}"
        plain[f"{p}.input_layernorm.weight"] = [hidden]
        plain[f"{p}.post_attention_layernorm.weight"] = [hidden]
        linears[f"{p}.self_attn.q_proj"] = (heads * head_dim, hidden)
        linears[f"{p}.self_attn.k_proj"] = (kv * head_dim, hidden)
        linears[f"{p}.self_attn.v_proj"] = (kv * head_dim, hidden)
        linears[f"{p}.self_attn.o_proj"] = (hidden, heads * head_dim)
        linears[f"{p}.block_sparse_moe.gate"] = (experts, hidden)
        for e in range(experts):
            q = f"{p}.block_sparse_moe.experts.{e}"
            linears[f"{q}.w1"] = (inter, hidden)
            linears[f"{q}.w3"] = (inter, hidden)
            linears[f"{q}.w2"] = (hidden, inter)
    return plain, linears


def check_format(ck: Checkpoint):
    """Appends violations to ck.problems; returns (group size, {module: (out, in)} quantized, {module} 16-bit)."""
    P = ck.problems
    qc = ck.config.get("quantization_config")
    if not isinstance(qc, dict):
        P.append("config.json: no quantization_config")
        return None, {}, set()
    if qc.get("quant_method") != "awq":
        P.append(f"quantization_config.quant_method is {qc.get('quant_method')!r}, not 'awq'")
    if qc.get("bits", qc.get("w_bit")) != 4:
        P.append(f"quantization_config.bits is {qc.get('bits')!r}, not 4")
    group = qc.get("group_size", qc.get("q_group_size"))
    if not isinstance(group, int) or group <= 0:
        P.append(f"quantization_config.group_size is {group!r}, not a positive integer")
        group = None
    if not isinstance(qc.get("zero_point"), bool):
        P.append(f"quantization_config.zero_point is {qc.get('zero_point')!r}, not a boolean")
    elif not qc["zero_point"]:
        ck.notes.append("zero_point false (symmetric): GEMM kernels still read qzeros as stored")
    if qc.get("version") != "gemm":
        P.append(f"quantization_config.version is {qc.get('version')!r}, not 'gemm'")
    skip = qc.get("modules_to_not_convert")
    if not isinstance(skip, list) or not all(isinstance(s, str) for s in skip):
        P.append(f"quantization_config.modules_to_not_convert is {skip!r}, not a list of names")
        skip = []
    if ck.config.get("torch_dtype", ck.config.get("dtype")) not in ("float16", None):
        ck.notes.append(f"config torch_dtype is {ck.config.get('torch_dtype', ck.config.get('dtype'))!r} "
                        "(AutoAWQ writes float16; loaders run AWQ in fp16 regardless)")

    plain, linears = mixtral_modules(ck.config)
    # Loaders skip a Linear when any entry of modules_to_not_convert is a substring of its dotted name.
    kept = {m for m in linears if any(s in m for s in skip)}
    quantized = {m: shape for m, shape in linears.items() if m not in kept}
    routers = {m for m in linears if m.endswith(".block_sparse_moe.gate")}
    if not routers <= kept:
        P.append(f"modules_to_not_convert {skip} does not cover the router ({len(routers - kept)} gate modules)")
    for m in kept - routers:
        ck.notes.append(f"{m} left in 16 bits by modules_to_not_convert")

    expected = set()
    for name, shape in plain.items():
        expected.add(name)
        _check_plain(ck, name, shape)
    for m in kept:
        name = f"{m}.weight"
        expected.add(name)
        _check_plain(ck, name, list(linears[m]))
        for suffix in ("qweight", "qzeros", "scales"):
            if f"{m}.{suffix}" in ck.where:
                P.append(f"{m}.{suffix} present, but modules_to_not_convert says {m} stays 16-bit")
    for m, (out_f, in_f) in quantized.items():
        if f"{m}.weight" in ck.where:
            P.append(f"{m}.weight left over next to a quantized Linear")
        if group and in_f % group:
            P.append(f"{m}: group size {group} does not divide in_features {in_f}")
            continue
        if out_f % 8:
            P.append(f"{m}: out_features {out_f} is not a multiple of 8 (8 nibbles per int32)")
            continue
        want = {"qweight": ("I32", [in_f, out_f // 8]),
                "qzeros": ("I32", [in_f // group, out_f // 8]) if group else None,
                "scales": ("F16", [in_f // group, out_f]) if group else None}
        for suffix, spec in want.items():
            name = f"{m}.{suffix}"
            expected.add(name)
            if name not in ck.where:
                P.append(f"{name} missing")
            elif spec and (ck.dtype(name), ck.shape(name)) != spec:
                P.append(f"{name}: {ck.dtype(name)} {ck.shape(name)}, expected {spec[0]} {spec[1]}")
    for name in sorted(set(ck.where) - expected):
        P.append(f"unexpected tensor {name} ({ck.dtype(name)} {ck.shape(name)})")
    return group, quantized, kept


def _check_plain(ck: Checkpoint, name: str, shape: list[int]) -> None:
    if name not in ck.where:
        ck.problems.append(f"{name} missing")
    elif ck.dtype(name) not in ("BF16", "F16"):
        ck.problems.append(f"{name}: {ck.dtype(name)}, expected a 16-bit float (BF16 or F16)")
    elif ck.shape(name) != shape:
        ck.problems.append(f"{name}: shape {ck.shape(name)}, expected {shape}")


def dequantized_state(ck: Checkpoint, group: int, quantized: dict, kept: set) -> dict[str, np.ndarray]:
    """Every parameter as float32 under its original name: quantized Linears dequantized, the rest upcast."""
    state = {}
    plain, _ = mixtral_modules(ck.config)
    for name in plain:
        state[name] = ck.read_float32(name)
    for m in kept:
        state[f"{m}.weight"] = ck.read_float32(f"{m}.weight")
    for m, (out_f, in_f) in quantized.items():
        scales = ck.read(f"{m}.scales")
        if not np.all(np.isfinite(scales.astype(np.float32))):
            ck.problems.append(f"{m}.scales has non-finite values")
        w = dequantize(ck.read(f"{m}.qweight"), ck.read(f"{m}.qzeros"), scales, group)
        assert w.shape == (out_f, in_f)
        state[f"{m}.weight"] = w
    return state


def compare_with_source(ck: Checkpoint, state: dict, source: Checkpoint, group: int, quantized: dict,
                        is_rtn: bool) -> dict:
    """What changed relative to the 16-bit source model, and checks that hold for any correct quantizer."""
    out = {"unchanged_16bit": [], "changed_16bit": [], "router_max_rel_err": 0.0}
    plain, linears = mixtral_modules(ck.config)
    for name in plain:
        same = np.array_equal(state[name], source.read_float32(name))
        out["unchanged_16bit" if same else "changed_16bit"].append(name)
    # The router reads the same normed activations as w1/w3. Whatever scale AWQ folds into
    # post_attention_layernorm (÷s) must be multiplied back into the router's columns (×s), so
    # gate[:, j] · norm[j] is the same function of x before and after.
    for layer in range(ck.config["num_hidden_layers"]):
        p = f"model.layers.{layer}"
        mine = state[f"{p}.block_sparse_moe.gate.weight"] * state[f"{p}.post_attention_layernorm.weight"]
        ref = source.read_float32(f"{p}.block_sparse_moe.gate.weight") * \
            source.read_float32(f"{p}.post_attention_layernorm.weight")
        err = float(np.max(np.abs(mine - ref) / (np.abs(ref) + 1e-3 * np.max(np.abs(ref)))))
        out["router_max_rel_err"] = max(out["router_max_rel_err"], err)
    if out["router_max_rel_err"] > ROUTER_REL_TOL:
        ck.problems.append(f"router ⊙ post-attention norm differs from the source by {out['router_max_rel_err']:.3g} "
                           "(relative): the router was not rescaled with the folded norm")
    # Round-to-nearest: no scaling, no clipping, so every weight lies within one step (scale) of the source,
    # whatever rounding rule chose the grid, as long as the grid spans the group's range. A wrong nibble order
    # or group layout gives errors of many steps.
    # AWQ divides a norm weight by s and multiplies the columns of the Linears it feeds by s, so the
    # comparable quantity is W · diag(norm) (q, k, v after input_layernorm; w1 after post_attention_layernorm).
    # w3 rows and w2 columns also carry the w3 → w2 scale, so they are compared only for RTN.
    feeding_norm = {"q_proj": "input_layernorm", "k_proj": "input_layernorm", "v_proj": "input_layernorm",
                    "w1": "post_attention_layernorm"}
    errs = {}
    for m, (out_f, in_f) in quantized.items():
        kind = m.rsplit(".", 1)[1]
        if not is_rtn and kind in ("w2", "w3"):
            continue
        w_src = source.read_float32(f"{m}.weight")
        w_ours = state[f"{m}.weight"]
        if is_rtn:
            steps = np.repeat(ck.read(f"{m}.scales").astype(np.float32), group, 0).T   # [out, in]
            e = errs.setdefault(kind, {"max_err_in_steps": 0.0, "rel_frobenius": [], "n": 0})
            e["max_err_in_steps"] = max(e["max_err_in_steps"],
                                        float(np.max(np.abs(w_ours - w_src) / np.maximum(steps, 1e-30))))
        else:
            e = errs.setdefault(kind, {"rel_frobenius": [], "n": 0})
            if kind in feeding_norm:
                layer_prefix = m.split(".self_attn.")[0].split(".block_sparse_moe.")[0]
                norm = f"{layer_prefix}.{feeding_norm[kind]}.weight"
                w_ours = w_ours * state[norm][None, :]
                w_src = w_src * source.read_float32(norm)[None, :]
        e["rel_frobenius"].append(float(np.linalg.norm(w_ours - w_src) / np.linalg.norm(w_src)))
        e["n"] += 1
    for kind, e in errs.items():
        e["rel_frobenius"] = float(np.mean(e["rel_frobenius"]))
        if is_rtn and e["max_err_in_steps"] > 1.0 + 1e-3:
            ck.problems.append(f"RTN {kind}: a weight is {e['max_err_in_steps']:.2f} quantization steps from the "
                               "source (≤ 1 expected): unpacking or grouping is wrong")
    out["linear_error_vs_source"] = errs
    return out


# ---------------------------------------------------------------------------------------------------------
# transformers side.
def load_transformers(folder_state: dict, config: dict, device: str, work: str):
    """float32 state + config (quantization_config removed) → transformers' MixtralForCausalLM, checked."""
    import torch
    from transformers import MixtralForCausalLM

    cfg = {k: v for k, v in config.items() if k != "quantization_config"}
    cfg["torch_dtype"] = "float32"
    os.makedirs(work, exist_ok=True)
    with open(os.path.join(work, "config.json"), "w") as f:
        json.dump(cfg, f)
    write_safetensors(os.path.join(work, "model.safetensors"), folder_state)
    model, info = MixtralForCausalLM.from_pretrained(work, dtype=torch.float32, attn_implementation="eager",
                                                     output_loading_info=True)
    problems = []
    for key in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"):
        if info.get(key):
            problems.append(f"transformers loading: {key} = {sorted(map(str, info[key]))[:8]}")
    # Whatever layout transformers uses internally (it may stack experts), every value we wrote must
    # be in its parameters: same element count, same float64 sum of |w| (a randomly initialised
    # leftover would change both).
    n_ours = sum(a.size for a in folder_state.values())
    s_ours = sum(float(np.abs(a.astype(np.float64)).sum()) for a in folder_state.values())
    n_tf = sum(p.numel() for p in model.parameters())
    s_tf = sum(float(p.detach().double().abs().sum()) for p in model.parameters())
    if n_ours != n_tf or abs(s_ours - s_tf) > 1e-9 * s_ours:
        problems.append(f"transformers parameters: {n_tf} values, Σ|w| {s_tf:.9g}; written: {n_ours}, {s_ours:.9g}")
    model.eval().to(device)
    return model, problems


def model_perplexity(model, ids: np.ndarray, windows: int, seq: int, device: str, batch: int = 8):
    """Per-window mean NLL (nats, float64 log-softmax of float32 logits) and the overall figures."""
    import torch
    win = torch.from_numpy(ids[: windows * seq].astype(np.int64).reshape(windows, seq))
    per_window = []
    with torch.no_grad():
        for b in range(0, windows, batch):
            x = win[b:b + batch].to(device)
            logits = model(input_ids=x, use_cache=False).logits               # [B, seq, vocab] float32
            logp = torch.log_softmax(logits[:, :-1].double(), dim=-1)
            nll = -logp.gather(-1, x[:, 1:, None]).squeeze(-1)               # [B, seq − 1]
            per_window += nll.mean(dim=1).tolist()
    nll = float(np.mean(per_window))   # every window predicts seq − 1 tokens, so this is the token mean
    return {"ppl": math.exp(nll), "nll": nll, "tokens": windows * (seq - 1), "window_nll": per_window}


def compare_prompt(model, p: dict, device: str) -> dict:
    """One prompt: transformers' log-probs, argmax and greedy continuation against the engine's record."""
    import torch
    ids = list(p["input_ids"])
    n = len(ids)
    ours_greedy = list(p["greedy_32"])
    with torch.no_grad():
        # Teacher-forced on the engine's own continuation: argmax at every step without error cascades.
        x = torch.tensor([ids + ours_greedy], device=device)
        logits = model(input_ids=x, use_cache=False).logits[0].double()      # [n + 32, vocab]
        logp = torch.log_softmax(logits, dim=-1)
        spread = (logits.max(-1).values - logits.min(-1).values)             # [n + 32]
        top2 = torch.topk(logits, 2, dim=-1)
        margin = (top2.values[:, 0] - top2.values[:, 1])
        # Per-position log p of the prompt's actual next tokens.
        tgt = torch.tensor(ids[1:], device=device)
        tf_next = logp[: n - 1].gather(-1, tgt[:, None]).squeeze(-1)
        d_next = (tf_next - torch.tensor(p["next_logprob"], dtype=torch.float64, device=device)).abs()
        rel_next = float((d_next / spread[: n - 1]).max())
        # Probed tokens at the last prompt position.
        probe = torch.tensor(p["last_tokens"], device=device)
        d_last = (logp[n - 1, probe] - torch.tensor(p["last_logprob"], dtype=torch.float64, device=device)).abs()
        rel_last = float(d_last.max() / spread[n - 1])
        # Argmax along the engine's continuation.
        tf_argmax = top2.indices[n - 1: n + 31, 0].tolist()
        mismatches = [k for k in range(32) if tf_argmax[k] != ours_greedy[k]]
        ties = [k for k in mismatches if float(margin[n - 1 + k]) < ARGMAX_TIE_MARGIN]
        # transformers' own greedy continuation (full recompute per step, no cache).
        seqn = list(ids)
        for _ in range(32):
            lg = model(input_ids=torch.tensor([seqn], device=device), use_cache=False).logits[0, -1]
            seqn.append(int(lg.argmax()))
        tf_greedy = seqn[n:]
    first_diff = next((k for k in range(32) if tf_greedy[k] != ours_greedy[k]), None)
    return {
        "name": p["name"],
        "prompt_tokens": n,
        "greedy_equal": tf_greedy == ours_greedy,
        "greedy_first_difference": first_diff,
        "teacher_forced_argmax_mismatches": len(mismatches),
        "argmax_mismatches_at_near_ties": len(ties),
        "min_top2_margin": float(margin[n - 1: n + 31].min()),
        "next_logprob_max_abs_diff": float(d_next.max()),
        "next_logprob_max_rel_diff": rel_next,
        "last_logprob_max_abs_diff": float(d_last.max()),
        "last_logprob_max_rel_diff": rel_last,
        "last_tokens_probed": len(p["last_tokens"]),
        "self_check_noise": abs(p["self_check"]["first"] - p["self_check"]["again"]),
    }


def rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


# ---------------------------------------------------------------------------------------------------------
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoints", nargs="*", help="NAME=DIR (NAME as in ours.json) or DIR")
    ap.add_argument("--self-test", action="store_true", help="check the packing code on known words and exit")
    ap.add_argument("--format-only", action="store_true", help="format checks and dequantization, no model")
    ap.add_argument("--ours", help="ours.json from scripts/interop/engine_side.mjs")
    ap.add_argument("--ids", help="valid_ids.safetensors (int32 `ids`)")
    ap.add_argument("--source", help="the 16-bit model the checkpoints were made from (extra checks)")
    ap.add_argument("--baseline", help="a 16-bit model folder to run through transformers directly (harness check)")
    ap.add_argument("--figures", help="reference-figures.json (the fixture's float32 perplexity)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", help="write the full report as JSON here")
    args = ap.parse_args()

    report = {"generated_by": "scripts/interop/check_awq_checkpoint.py", "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
              "checks_failed": [], "checkpoints": {}}
    failed = report["checks_failed"]

    st = self_test()
    report["self_test"] = "ok" if not st else st
    failed += [f"self-test: {f}" for f in st]
    print("self-test (packing, known words):", "ok" if not st else st)
    if args.self_test:
        return 1 if st else 0
    if not args.checkpoints:
        ap.error("name at least one checkpoint folder")
    for path in [args.ours, args.ids, args.figures]:
        if path and not os.path.exists(path):
            print(f"SKIPPED: {path} not found (fixtures or the engine's record)")
            return 77

    ours = None
    if not args.format_only:
        if not (args.ours and args.ids):
            ap.error("--ours and --ids are needed unless --format-only")
        with open(args.ours) as f:
            ours = json.load(f)
        report["engine_record"] = {k: ours.get(k) for k in ("date", "host", "addon_version", "addon_sha256", "threads")}
        import torch
        import transformers
        torch.set_num_threads(os.cpu_count() or 1)
        report["versions"] = {"torch": torch.__version__, "transformers": transformers.__version__,
                              "numpy": np.__version__, "device": args.device, "threads": torch.get_num_threads()}
        print("versions:", report["versions"])
        ids = SafetensorsFile(args.ids).read("ids")

    source = Checkpoint(args.source) if args.source else None
    work_root = tempfile.mkdtemp(prefix="awq-interop-")

    def guarded(label, fn):
        # One part failing (an API difference in this transformers version, say) must not hide the others.
        try:
            fn()
        except Exception:  # noqa: BLE001 — reported as a failed check with its traceback
            import traceback
            tb = traceback.format_exc()
            print(f"{label}: EXCEPTION\n{tb}")
            failed.append(f"{label}: exception {tb.strip().splitlines()[-1]}")

    def run_baseline():
        # The harness itself: transformers' own loader on the 16-bit folder must reproduce the fixture's
        # float32 perplexity, and our reader+writer route must give transformers bit-identical parameters.
        from transformers import MixtralForCausalLM
        t0 = time.time()
        direct = MixtralForCausalLM.from_pretrained(args.baseline, dtype=torch.float32,
                                                    attn_implementation="eager").eval().to(args.device)
        base_ck = Checkpoint(args.baseline)
        plain, linears = mixtral_modules(base_ck.config)
        state = {n: base_ck.read_float32(n) for n in list(plain) + [f"{m}.weight" for m in linears]}
        routed, probs = load_transformers(state, base_ck.config, args.device, os.path.join(work_root, "baseline"))
        same = all(torch.equal(a, b) for a, b in zip(direct.state_dict().values(), routed.state_dict().values()))
        failed.extend(f"baseline: {p}" for p in probs)
        if not same:
            failed.append("baseline: reader/writer route gives transformers different parameters than from_pretrained")
        pp = model_perplexity(direct, ids, ours["windows"], ours["seq"], args.device)
        b = {"ppl": pp["ppl"], "route_identical": same, "seconds": time.time() - t0}
        if args.figures:
            with open(args.figures) as f:
                fig = json.load(f)["mixq-tiny-code"]
            b["fixture_ppl_fp32"] = fig["valid_ppl_fp32"]
            b["rel_diff"] = rel(pp["ppl"], fig["valid_ppl_fp32"])
            report["fixture_figures"] = fig
            if b["rel_diff"] > PPL_REL_TOL:
                failed.append(f"baseline: transformers ppl {pp['ppl']:.6f} vs fixture {fig['valid_ppl_fp32']:.6f}")
        report["baseline"] = b
        print(f"baseline (transformers on {args.baseline}): ppl {pp['ppl']:.6f}", {k: v for k, v in b.items() if k != 'ppl'})
        del direct, routed

    if args.baseline and ours is not None:
        guarded("baseline", run_baseline)

    for spec in args.checkpoints:
        name, _, folder = spec.rpartition("=")
        name = name or os.path.basename(os.path.normpath(folder))
        t0 = time.time()
        ck = Checkpoint(folder)
        group, quantized, kept = check_format(ck)
        r = {"folder": folder, "quantization_config": ck.config.get("quantization_config"),
             "quantized_linears": len(quantized), "sixteen_bit_linears": sorted(kept), "shards": len(ck.files)}
        report["checkpoints"][name] = r
        print(f"\n== {name} ({folder}): {len(quantized)} quantized Linears, {len(kept)} kept 16-bit, "
              f"{len(ck.files)} shard(s)")
        if ck.problems:
            r["format_problems"] = ck.problems
            failed += [f"{name}: {p}" for p in ck.problems]
            print("format problems:\n  " + "\n  ".join(ck.problems[:40]))
            continue
        state = dequantized_state(ck, group, quantized, kept)
        if source is not None:
            is_rtn = name.startswith("rtn")
            r["vs_source"] = compare_with_source(ck, state, source, group, quantized, is_rtn)
            print("vs source:", json.dumps(r["vs_source"]["linear_error_vs_source"]),
                  f"router max rel err {r['vs_source']['router_max_rel_err']:.3g},",
                  f"16-bit tensors changed: {len(r['vs_source']['changed_16bit'])}")
        if ck.problems:   # found while dequantizing or against the source
            r["format_problems"] = ck.problems
            failed += [f"{name}: {p}" for p in ck.problems]
            print("problems:\n  " + "\n  ".join(ck.problems[:40]))
        r["notes"] = ck.notes
        print("format: ok" if not ck.problems else "format: FAILED", "| notes:", ck.notes)
        if ours is None:
            continue
        if name not in ours["checkpoints"]:
            failed.append(f"{name}: not in {args.ours} (engine side not recorded)")
            continue
        eng = ours["checkpoints"][name]

        def run_model(name=name, ck=ck, state=state, eng=eng, r=r, t0=t0):
            model, probs = load_transformers(state, ck.config, args.device, os.path.join(work_root, name))
            failed.extend(f"{name}: {p}" for p in probs)
            pp = model_perplexity(model, ids, ours["windows"], ours["seq"], args.device)
            wrel = [rel(a, b) for a, b in zip(eng["window_nll"], pp["window_nll"])]
            r["ppl"] = {"transformers": pp["ppl"], "engine_cli": eng["cli_ppl"]["ppl"],
                        "rel_diff": rel(eng["cli_ppl"]["ppl"], pp["ppl"]),
                        "nll_transformers": pp["nll"], "nll_engine": eng["cli_ppl"]["nll"],
                        "tokens": pp["tokens"], "engine_tokens": eng["cli_ppl"]["tokens"],
                        "window_nll_max_rel_diff": max(wrel), "windows": len(wrel)}
            print(f"ppl: transformers {pp['ppl']:.8f}  engine {eng['cli_ppl']['ppl']:.8f}  "
                  f"rel diff {r['ppl']['rel_diff']:.2e}; per-window NLL max rel diff {max(wrel):.2e}")
            if r["ppl"]["rel_diff"] > PPL_REL_TOL or pp["tokens"] != eng["cli_ppl"]["tokens"]:
                failed.append(f"{name}: perplexity {eng['cli_ppl']['ppl']:.8f} (engine) vs {pp['ppl']:.8f} (transformers)")
            if max(wrel) > PPL_REL_TOL:
                failed.append(f"{name}: a window's NLL differs by {max(wrel):.2e} relative")
            prompts = [compare_prompt(model, p, args.device) for p in eng["prompts"]]
            r["prompts"] = prompts
            for q in prompts:
                print(f"  {q['name']:>12}: greedy equal {q['greedy_equal']!s:5} (first diff {q['greedy_first_difference']}), "
                      f"argmax mismatches {q['teacher_forced_argmax_mismatches']} (near-ties {q['argmax_mismatches_at_near_ties']}), "
                      f"log p max |Δ| next {q['next_logprob_max_abs_diff']:.2e} last {q['last_logprob_max_abs_diff']:.2e} "
                      f"(rel {max(q['next_logprob_max_rel_diff'], q['last_logprob_max_rel_diff']):.2e})")
                if q["teacher_forced_argmax_mismatches"] > q["argmax_mismatches_at_near_ties"]:
                    failed.append(f"{name}/{q['name']}: argmax differs away from a near-tie")
                if max(q["next_logprob_max_rel_diff"], q["last_logprob_max_rel_diff"]) > LOGPROB_REL_TOL:
                    failed.append(f"{name}/{q['name']}: log-probabilities differ by more than {LOGPROB_REL_TOL} of the logit spread")
            r["greedy_equal"] = sum(q["greedy_equal"] for q in prompts)
            r["seconds"] = time.time() - t0
            del model

        guarded(f"{name} (transformers)", run_model)

    print("\nRESULT:", "all checks passed" if not failed else f"{len(failed)} check(s) failed:\n  " + "\n  ".join(failed))
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
