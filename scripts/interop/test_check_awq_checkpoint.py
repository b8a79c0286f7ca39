#!/usr/bin/env python3
"""Tests of check_awq_checkpoint.py's format checks and dequantizer (numpy only; no torch, no fixtures).

Builds a small synthetic Mixtral (1 layer, 2 experts, hidden 64) in a temporary folder, quantizes it to AutoAWQ
GEMM with a plain round-to-nearest written here, and checks that the checker accepts it and dequantizes it
exactly, then breaks one thing at a time and checks that the checker names the break.

  python3 scripts/interop/test_check_awq_checkpoint.py        (unittest; exit 0 when all pass)
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import unittest

import numpy as np

sys.dont_write_bytecode = True  # no __pycache__ beside the sources
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import check_awq_checkpoint as cac  # noqa: E402

CONFIG = {
    "architectures": ["MixtralForCausalLM"], "model_type": "mixtral", "hidden_size": 64, "intermediate_size": 128,
    "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1, "num_local_experts": 2,
    "num_experts_per_tok": 2, "vocab_size": 32, "tie_word_embeddings": False, "rms_norm_eps": 1e-5,
    "torch_dtype": "float16",
}
GROUP = 32
QCONFIG = {"quant_method": "awq", "bits": 4, "group_size": GROUP, "zero_point": True, "version": "gemm",
           "modules_to_not_convert": ["gate"]}


def to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 → bf16 bit patterns (uint16), round to nearest even."""
    u = x.astype(np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def rtn_quantize(w: np.ndarray, group: int):
    """w [out, in] float32 → (q [in, out] 0..15, z [in/g, out] 0..15, s fp16 [in/g, out]), asymmetric 4-bit."""
    wt = w.T.astype(np.float32)                                   # [in, out]
    g = wt.reshape(-1, group, wt.shape[1])                        # [in/g, g, out]
    mx, mn = g.max(axis=1), g.min(axis=1)                         # [in/g, out]
    s = np.maximum((mx - mn) / 15, 1e-8).astype(np.float16)
    sf = s.astype(np.float32)
    z = np.clip(np.round(-mn / sf), 0, 15)
    q = np.clip(np.round(g / sf[:, None, :]) + z[:, None, :], 0, 15).reshape(wt.shape)
    return q.astype(np.uint8), z.astype(np.uint8), s


def build(folder: str, order=cac.AWQ_ORDER, seed: int = 0):
    """Writes a 16-bit source folder and an AWQ GEMM folder (2 shards + index) under `folder`.

    Returns (source dir, awq dir, {module: expected float32 dequantized weight}).
    """
    rng = np.random.default_rng(seed)
    plain, linears = cac.mixtral_modules(CONFIG)
    src = {n: to_bf16_bits(rng.normal(1.0 if "norm" in n else 0.0, 0.05 if "norm" in n else 0.5, size=shape))
           for n, shape in plain.items()}
    src.update({f"{m}.weight": to_bf16_bits(rng.normal(0, 0.5, size=shape)) for m, shape in linears.items()})
    src_dir, awq_dir = os.path.join(folder, "src"), os.path.join(folder, "awq")
    os.makedirs(src_dir)
    os.makedirs(awq_dir)
    with open(os.path.join(src_dir, "config.json"), "w") as f:
        json.dump(CONFIG, f)
    cac.write_safetensors(os.path.join(src_dir, "model.safetensors"), {n: ("BF16", a) for n, a in src.items()})

    def pack(values):
        # Packs with an arbitrary slot order (the tests pass a wrong one on purpose).
        rows, cols = values.shape
        out = np.zeros((rows, cols // 8), dtype=np.int64)
        for i in range(8):
            out |= values[:, np.arange(cols // 8) * 8 + order[i]].astype(np.int64) << (4 * i)
        return np.where(out >= 2**31, out - 2**32, out).astype(np.int32)

    shard1, shard2, expected = {}, {}, {}
    for n, a in src.items():
        if n in plain or ".gate." in n:
            shard1[n] = ("BF16", a)
    for m in linears:
        if m.endswith(".gate"):
            continue
        w = (src[f"{m}.weight"].astype(np.uint32) << 16).view(np.float32)
        q, z, s = rtn_quantize(w, GROUP)
        shard2[f"{m}.qweight"], shard2[f"{m}.qzeros"], shard2[f"{m}.scales"] = pack(q), pack(z), s
        expected[m] = ((q.astype(np.float32) - np.repeat(z, GROUP, 0)) * np.repeat(s.astype(np.float32), GROUP, 0)).T
    write_awq(awq_dir, {"model-00001-of-00002.safetensors": shard1, "model-00002-of-00002.safetensors": shard2},
              dict(CONFIG, quantization_config=QCONFIG))
    return src_dir, awq_dir, expected


def write_awq(folder: str, shards: dict, config: dict, total_size_delta: int = 0, remap: dict | None = None):
    weight_map, total = {}, 0
    for fname, tensors in shards.items():
        cac.write_safetensors(os.path.join(folder, fname), tensors)
        for n, a in tensors.items():
            a = a[1] if isinstance(a, tuple) else a
            weight_map[n] = fname
            total += a.nbytes
    weight_map.update(remap or {})
    with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total + total_size_delta}, "weight_map": weight_map}, f)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f)


def read_all(folder: str) -> dict:
    """{shard file: {name: (dtype, array)}} of an AWQ folder, to rewrite it with one change."""
    out = {}
    for fname in sorted(os.listdir(folder)):
        if fname.endswith(".safetensors"):
            sf = cac.SafetensorsFile(os.path.join(folder, fname))
            out[fname] = {n: (e["dtype"], sf.read(n)) for n, e in sf.entries.items()}
    return out


class CheckerTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="awq-checker-test-")
        self.src, self.awq, self.expected = build(self.tmp)

    def tearDown(self):
        shutil.rmtree(self.tmp)

    def check(self, folder=None, source=True):
        ck = cac.Checkpoint(folder or self.awq)
        group, quantized, kept = cac.check_format(ck)
        if not ck.problems:
            state = cac.dequantized_state(ck, group, quantized, kept)
            if source:
                cac.compare_with_source(ck, state, cac.Checkpoint(self.src), group, quantized, is_rtn=True)
            return ck, state
        return ck, None

    def mutate(self, edit_shards=None, edit_config=None, **write_kw):
        """Rewrites the AWQ folder into a new one with one change."""
        shards = read_all(self.awq)
        with open(os.path.join(self.awq, "config.json")) as f:
            config = json.load(f)
        if edit_shards:
            edit_shards(shards)
        if edit_config:
            edit_config(config)
        out = tempfile.mkdtemp(dir=self.tmp)
        write_awq(out, shards, config, **write_kw)
        return out

    def assertProblem(self, ck, *fragments):
        text = "\n".join(ck.problems)
        for frag in fragments:
            self.assertIn(frag, text, f"expected a problem mentioning {frag!r}; got:\n{text}")

    # -- the packing itself ------------------------------------------------------------------------------
    def test_self_test_passes(self):
        self.assertEqual(cac.self_test(), [])

    def test_vectorised_unpack_matches_naive_pack(self):
        vals = np.random.default_rng(1).integers(0, 16, size=(7, 40), dtype=np.uint8)
        np.testing.assert_array_equal(cac.unpack_awq(cac.pack_awq_naive(vals)), vals)

    # -- a correct checkpoint ----------------------------------------------------------------------------
    def test_clean_checkpoint_passes_and_dequantizes_exactly(self):
        ck, state = self.check()
        self.assertEqual(ck.problems, [])
        self.assertEqual(len(self.expected), 4 + 2 * 3)  # q, k, v, o + 2 experts × (w1, w2, w3)
        for m, w in self.expected.items():
            np.testing.assert_array_equal(state[f"{m}.weight"], w, err_msg=m)

    # -- one break at a time -----------------------------------------------------------------------------
    def test_wrong_nibble_order_is_caught_against_the_source(self):
        bad = os.path.join(self.tmp, "bad-order")
        os.makedirs(bad)
        _, bad_awq, _ = build(bad, order=(0, 1, 2, 3, 4, 5, 6, 7))
        ck, _ = self.check(bad_awq)
        self.assertProblem(ck, "quantization steps from the source")

    def test_missing_qzeros(self):
        m = "model.layers.0.self_attn.k_proj"
        ck, _ = self.check(self.mutate(lambda s: s["model-00002-of-00002.safetensors"].pop(f"{m}.qzeros")))
        self.assertProblem(ck, f"{m}.qzeros missing")

    def test_scales_not_fp16(self):
        m = "model.layers.0.block_sparse_moe.experts.1.w2"
        def to_f32(s):
            d, a = s["model-00002-of-00002.safetensors"][f"{m}.scales"]
            s["model-00002-of-00002.safetensors"][f"{m}.scales"] = ("F32", a.astype(np.float32))
        ck, _ = self.check(self.mutate(to_f32))
        self.assertProblem(ck, f"{m}.scales: F32", "expected F16")

    def test_qweight_shape_inconsistent(self):
        m = "model.layers.0.self_attn.o_proj"
        def cut(s):
            d, a = s["model-00002-of-00002.safetensors"][f"{m}.qweight"]
            s["model-00002-of-00002.safetensors"][f"{m}.qweight"] = (d, a[:, :4].copy())
        ck, _ = self.check(self.mutate(cut))
        self.assertProblem(ck, f"{m}.qweight: I32 [64, 4], expected I32 [64, 8]")

    def test_leftover_weight_next_to_quantized_linear(self):
        m = "model.layers.0.self_attn.q_proj"
        def add(s):
            s["model-00002-of-00002.safetensors"][f"{m}.weight"] = ("BF16", np.zeros((64, 64), np.uint16))
        ck, _ = self.check(self.mutate(add))
        self.assertProblem(ck, f"{m}.weight left over")

    def test_router_not_in_modules_to_not_convert(self):
        ck, _ = self.check(self.mutate(edit_config=lambda c: c["quantization_config"].update(modules_to_not_convert=[])))
        self.assertProblem(ck, "does not cover the router", "block_sparse_moe.gate.weight left over")

    def test_bad_quantization_config_fields(self):
        def edit(c):
            c["quantization_config"].update(version="gemv", bits=8, quant_method="gptq")
        ck, _ = self.check(self.mutate(edit_config=edit))
        self.assertProblem(ck, "version is 'gemv'", "bits is 8", "quant_method is 'gptq'")

    def test_group_size_not_dividing(self):
        ck, _ = self.check(self.mutate(edit_config=lambda c: c["quantization_config"].update(group_size=48)))
        self.assertProblem(ck, "group size 48 does not divide in_features 64")

    def test_index_total_size_and_weight_map(self):
        ck, _ = self.check(self.mutate(total_size_delta=2))
        self.assertProblem(ck, "metadata.total_size")
        name = "model.norm.weight"
        ck, _ = self.check(self.mutate(remap={name: "model-00002-of-00002.safetensors"}))
        self.assertProblem(ck, f"index: {name} mapped to model-00002-of-00002.safetensors")

    def test_router_rescaled_without_norm_fold(self):
        g = "model.layers.0.block_sparse_moe.gate.weight"
        def scale(s):
            d, a = s["model-00001-of-00002.safetensors"][g]
            w = (a.astype(np.uint32) << 16).view(np.float32)
            w[:, :8] *= 2   # columns scaled as if by AWQ, but the norm left as it was
            s["model-00001-of-00002.safetensors"][g] = (d, to_bf16_bits(w))
        ck, _ = self.check(self.mutate(scale))
        self.assertProblem(ck, "router was not rescaled")

    def test_truncated_shard(self):
        path = os.path.join(self.awq, "model-00002-of-00002.safetensors")
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) - 16)
        ck = cac.Checkpoint(self.awq)
        self.assertProblem(ck, "outside the data region")


if __name__ == "__main__":
    unittest.main(verbosity=2)
