# AWQ lab: a plain PyTorch Mixtral + AWQ (our own reading of FIELD-NOTES), to find which change of the algorithm
# closes the gap to ppl <= 9.55 on the fixture, in seconds on a GPU (the native quantizer takes minutes on 2 cores).
# Not product code: the product is native/src/quant. Every figure it printed is in docs/BENCHMARKS.md (AWQ quality).
#
#   node scripts/awq-lab/dump_calib.js            # here: .lab/ gets the calibration ids and the held-out stream
#   python3 scripts/awq-lab/awq_lab.py fp32,rtn128,awq128,B_act_d1   # on the GPU machine (run tool, carry .lab)
#
# Variant names: awq128 = AutoAWQ's algorithm; vo = v→o group under GQA; gptq = codes by error feedback; actorder;
# cq = next layer calibrated on the quantized layer; bf16 = norms/router rounded to bf16 as the checkpoint stores
# them; B = vo+gptq+cq+bf16; _s1/_s2 = other calibration seeds; d1 = damping 0.1.
import glob, json, math, os, sys, time, itertools
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
dev = 'cuda' if torch.cuda.is_available() else 'cpu'
MD = 'models/mixq-tiny-code'
cfg = json.load(open(f'{MD}/config.json'))
D = cfg['hidden_size']; I = cfg['intermediate_size']; NL = cfg['num_hidden_layers']
NH = cfg['num_attention_heads']; NKV = cfg['num_key_value_heads']; HD = D // NH
E = cfg['num_local_experts']; TOPK = cfg['num_experts_per_tok']; EPS = cfg['rms_norm_eps']; THETA = cfg['rope_theta']

def load_weights():
    W = {}
    for f in sorted(glob.glob(f'{MD}/*.safetensors')):
        for k, v in load_file(f).items():
            W[k] = v.float().to(dev)
    return W

W0 = load_weights()
valid = load_file('.lab/valid_ids.safetensors')['ids'].long().to(dev)

inv_freq = 1.0 / (THETA ** (torch.arange(0, HD, 2, device=dev).float() / HD))
def rope_cs(L):
    t = torch.arange(L, device=dev).float()
    f = torch.outer(t, inv_freq)
    e = torch.cat([f, f], -1)
    return e.cos(), e.sin()
COS, SIN = rope_cs(512)
def rot(x):
    x1, x2 = x[..., :HD // 2], x[..., HD // 2:]
    return torch.cat([-x2, x1], -1)

def rms(x, w):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + EPS) * w

def attn(x, q_w, k_w, v_w, o_w, want_ctx=False):
    # x [S, L, D]
    S, L, _ = x.shape
    q = (x @ q_w.T).view(S, L, NH, HD).transpose(1, 2)
    k = (x @ k_w.T).view(S, L, NKV, HD).transpose(1, 2)
    v = (x @ v_w.T).view(S, L, NKV, HD).transpose(1, 2)
    c, s = COS[:L], SIN[:L]
    q = q * c + rot(q) * s
    k = k * c + rot(k) * s
    k = k.repeat_interleave(NH // NKV, 1); v = v.repeat_interleave(NH // NKV, 1)
    ctx = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    ctx = ctx.transpose(1, 2).reshape(S, L, NH * HD)
    out = ctx @ o_w.T
    return (out, ctx) if want_ctx else out

def route(x2, gate):
    logits = x2 @ gate.T
    p = logits.softmax(-1)
    w, idx = p.topk(TOPK, -1)
    w = w / w.sum(-1, keepdim=True)
    return w, idx

def expert(x, w1, w3, w2, want_act=False):
    a = F.silu(x @ w1.T) * (x @ w3.T)
    y = a @ w2.T
    return (y, a) if want_act else y

def moe(x2flat, Wl, pref, routing=None, ws=None):
    # ws: optional dict of replacement expert weights
    w, idx = routing if routing is not None else route(x2flat, Wl[pref + 'gate.weight'])
    out = torch.zeros_like(x2flat)
    for e in range(E):
        tok, slot = (idx == e).nonzero(as_tuple=True)
        if tok.numel() == 0: continue
        g = lambda n: (ws or {}).get(f'{pref}experts.{e}.{n}.weight', Wl[f'{pref}experts.{e}.{n}.weight'])
        y = expert(x2flat[tok], g('w1'), g('w3'), g('w2'))
        out.index_add_(0, tok, y * w[tok, slot, None])
    return out

def forward_logits(W, ids):
    h = W['model.embed_tokens.weight'][ids]
    for l in range(NL):
        p = f'model.layers.{l}.'
        x = rms(h, W[p + 'input_layernorm.weight'])
        h = h + attn(x, W[p + 'self_attn.q_proj.weight'], W[p + 'self_attn.k_proj.weight'], W[p + 'self_attn.v_proj.weight'], W[p + 'self_attn.o_proj.weight'])
        x2 = rms(h, W[p + 'post_attention_layernorm.weight'])
        S, L, _ = x2.shape
        h = h + moe(x2.reshape(-1, D), W, p + 'block_sparse_moe.').view(S, L, D)
    return rms(h, W['model.norm.weight']) @ W['lm_head.weight'].T

@torch.no_grad()
def ppl(W, windows=120):
    nll, n = 0.0, 0
    for b in range(0, windows, 40):
        ids = torch.stack([valid[512 * w:512 * w + 512] for w in range(b, min(windows, b + 40))])
        lg = forward_logits(W, ids)
        lp = lg[:, :-1].log_softmax(-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
        nll -= lp.double().sum().item(); n += lp.numel()
    return math.exp(nll / n)

# ---------------- quantization primitives (weights in torch layout [out, in]) ----------------
def fq(w, G, lo=None, hi=None):
    """RTN int4 zero point per group of G input channels. lo/hi: per-group clip range [out, ng] (optional)."""
    o, i = w.shape
    g = w.reshape(o, i // G, G)
    if lo is not None:
        g = torch.maximum(torch.minimum(g, hi[..., None]), lo[..., None])
    mx = g.amax(-1, keepdim=True); mn = g.amin(-1, keepdim=True)
    s = ((mx - mn).clamp(min=1e-5) / 15).half().float()
    s = torch.where(s == 0, torch.full_like(s, 2 ** -24), s)
    z = (-torch.round(mn / s)).clamp(0, 15)
    q = (torch.round(g / s) + z).clamp(0, 15)
    return ((q - z) * s).reshape(o, i)

def w_mean_of(ws, G):
    w = torch.cat(ws, 0)
    o, i = w.shape
    g = w.abs().reshape(o, i // G, G)
    g = g / (g.amax(-1, keepdim=True) + 1e-6)
    return g.reshape(o, i).mean(0)

def duo(xm, wm, a, duo_scaling=True):
    if duo_scaling:
        s = (xm.pow(a) / (wm.pow(1 - a) + 1e-4)).clamp(min=1e-4)
    else:
        s = xm.pow(a).clamp(min=1e-4)
    return s / (s.max() * s.min()).sqrt()

def search(xm, wm, loss_fn, opt):
    best, bs, ba = float('inf'), torch.ones_like(xm), -1
    n = opt.get('grid', 20)
    for i in range(n):
        a = i / n
        s = duo(xm, wm, a, opt.get('duo', True))
        l = loss_fn(s)
        if l < best: best, bs, ba = l, s, a
    return bs, ba

def clip_search(w, x, G, opt):
    """w [out, in] (already scaled), x [n, in] (scaled inputs). Returns clipped w."""
    if x.shape[0] == 0: return w
    step = max(1, x.shape[0] // opt.get('clip_tokens', 512))
    x = x[::step]
    o, i = w.shape; ng = i // G
    xg = x.view(-1, ng, G)                    # [n, ng, G]
    wg = w.view(o, ng, G)
    org = torch.einsum('ngk,ogk->nog', xg, wg)
    amax = wg.abs().amax(-1)                  # [o, ng]
    mx0, mn0 = wg.amax(-1), wg.amin(-1)
    best = torch.full((o, ng), float('inf'), device=dev)
    best_lo, best_hi = -amax.clone(), amax.clone()
    steps = opt.get('clip_steps', 10)
    if opt.get('clip_asym'):
        cands = [(1 - a / 20, 1 - b / 20) for a in range(steps) for b in range(steps)]
    else:
        cands = [(1 - a / 20, None) for a in range(steps)]
    for (fa, fb) in cands:
        if fb is None:
            lo, hi = -amax * fa, amax * fa
        else:
            lo, hi = mn0 * fa, mx0 * fb
        q = fq(w, G, lo, hi).view(o, ng, G)
        cur = torch.einsum('ngk,ogk->nog', xg, q)
        err = (cur - org).pow(2).mean(0)
        better = err < best
        best = torch.where(better, err, best)
        best_lo = torch.where(better, lo, best_lo); best_hi = torch.where(better, hi, best_hi)
    if opt.get('clip_store_range'):
        return w, (best_lo, best_hi)
    return torch.maximum(torch.minimum(wg, best_hi[..., None]), best_lo[..., None]).reshape(o, i), None

def refine_q(w, G, x, rng, iters=4):
    """Clip range as given (or full), then alternate: codes for (s, z) ; least-squares s per group given the codes,
    weighted by the group's input Gram diagonal; keep a group's new (s, z) only where the exact output error drops."""
    o, i = w.shape; ng = i // G
    step = max(1, x.shape[0] // 512); xs = x[::step]
    xg = xs.view(-1, ng, G)
    hdiag = xg.pow(2).mean(0)                       # [ng, G]
    wg = w.view(o, ng, G)
    if rng is not None:
        wg_c = torch.maximum(torch.minimum(wg, rng[1][..., None]), rng[0][..., None])
    else:
        wg_c = wg
    mx = wg_c.amax(-1); mn = wg_c.amin(-1)
    s = ((mx - mn).clamp(min=1e-5) / 15).half().float()
    z = (-torch.round(mn / s)).clamp(0, 15)
    org = torch.einsum('ngk,ogk->nog', xg, wg)
    def deq(s, z):
        q = (torch.round(wg / s[..., None]) + z[..., None]).clamp(0, 15)
        return (q - z[..., None]) * s[..., None], q
    def err(dq):
        return (torch.einsum('ngk,ogk->nog', xg, dq) - org).pow(2).mean(0)
    best_dq, q = deq(s, z); best = err(best_dq)
    for _ in range(iters):
        d = q - z[..., None]                         # [o, ng, G]
        num = (hdiag[None] * wg * d).sum(-1); den = (hdiag[None] * d * d).sum(-1).clamp(min=1e-12)
        s_new = (num / den).clamp(min=1e-6).half().float()
        # best integer zero for the new scale: z = round(mean-ish offset) by weighted LS on (w/s - q)
        z_new = z
        dq, q_new = deq(s_new, z_new)
        e = err(dq)
        better = e < best
        best = torch.where(better, e, best)
        best_dq = torch.where(better[..., None], dq, best_dq)
        s = torch.where(better, s_new, s); q = torch.where(better[..., None], q_new, q)
    return best_dq.reshape(o, i)

def gptq_q(w, G, x, rng, damp=0.01, actorder=False):
    """Rounding with error feedback (GPTQ order: input channels left to right), (s, z) fixed per group from the
    (clipped) weights as RTN would set them."""
    o, i = w.shape; ng = i // G
    x = x.double()
    H = (x.T @ x) / max(1, x.shape[0])
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    H += damp * torch.diag(H).mean() * torch.eye(i, device=dev, dtype=torch.float64)
    L = torch.linalg.cholesky(H)
    Hinv = torch.cholesky_inverse(L)
    U = torch.linalg.cholesky(Hinv, upper=True)
    wg = w.view(o, ng, G)
    wc = torch.maximum(torch.minimum(wg, rng[1][..., None]), rng[0][..., None]) if rng is not None else wg
    mx = wc.amax(-1); mn = wc.amin(-1)
    s = ((mx - mn).clamp(min=1e-5) / 15).half().float()
    z = (-torch.round(mn / s)).clamp(0, 15)
    Wk = w.clone().double(); Q = torch.zeros_like(w)
    perm = torch.arange(i, device=dev)
    if actorder:
        perm = torch.argsort(torch.diag(H), descending=True)
        Hp = H[perm][:, perm]
        U = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(Hp)), upper=True)
        Wk = Wk[:, perm]
    U = U.double()
    for c in range(i):
        g = int(perm[c]) // G
        col = Wk[:, c].float()
        q = ((torch.round(col / s[:, g]) + z[:, g]).clamp(0, 15) - z[:, g]) * s[:, g]
        Q[:, int(perm[c])] = q
        err = (col - q).double() / U[c, c]
        Wk[:, c + 1:] -= err[:, None] * U[c, c + 1:][None, :]
    return Q

def mse(a, b): return (a - b).pow(2).mean().item()

@torch.no_grad()
def awq(W, calib, opt):
    G = opt['G']
    W = {k: v.clone() for k, v in W.items()}
    Q = {}          # name -> final dequantized weight
    S, L = calib.shape
    h = W['model.embed_tokens.weight'][calib]
    hq = h.clone()
    skip = opt.get('skip', set())
    for l in range(NL):
        p = f'model.layers.{l}.'; m = p + 'block_sparse_moe.'
        qn, kn, vn, on = (p + f'self_attn.{n}_proj.weight' for n in 'qkvo')
        hin = hq if opt.get('calib_on_quant') else h
        x1 = rms(hin, W[p + 'input_layernorm.weight'])
        attn_fp, ctx = attn(x1, W[qn], W[kn], W[vn], W[on], want_ctx=True)
        h1 = hin + attn_fp
        x2 = rms(h1, W[p + 'post_attention_layernorm.weight'])
        x2f = x2.reshape(-1, D)
        routing = route(x2f, W[m + 'gate.weight'])
        moe_fp = moe(x2f, W, m, routing)
        h_next = h1 + moe_fp.view(S, L, D)
        x1f = x1.reshape(-1, D)
        # (1) norm -> qkv
        def l1(s):
            qs = {n: fq(W[n] * s, G) / s for n in (qn, kn, vn)}
            return mse(attn(x1, qs[qn], qs[kn], qs[vn], W[on]), attn_fp)
        s1, a1 = search(x1f.abs().mean(0), w_mean_of([W[qn], W[kn], W[vn]], G), l1, opt) if 'attn' not in skip else (torch.ones(D, device=dev), -1)
        s_o = None
        if opt.get('vo'):
            rep = NH // NKV
            ctxf = ctx.reshape(-1, NH * HD)
            def expand(sv):  # [NKV*HD] -> [NH*HD]
                return sv.view(NKV, 1, HD).expand(NKV, rep, HD).reshape(-1)
            def tie(v):      # [NH*HD] -> [NKV*HD] mean over the heads sharing a kv head
                return v.view(NKV, rep, HD).mean(1).reshape(-1)
            o_ref = ctxf @ W[on].T
            def lvo(sv):
                so = expand(sv)
                return mse(ctxf @ (fq(W[on] * so, G) / so).T, o_ref)
            sv, avo = search(tie(ctxf.abs().mean(0)), tie(w_mean_of([W[on]], G)), lvo, opt)
            s_o = expand(sv)
        attn_done = False
        if opt.get('seq'):
            s1a = s1
            if opt.get('bf16'):
                n0 = W[p + 'input_layernorm.weight']; r = (n0 / s1).bfloat16().float()
                s1a = torch.where((r != 0) & (n0 != 0), n0 / r, s1)
            W[p + 'input_layernorm.weight'] = W[p + 'input_layernorm.weight'] / s1a
            for n in (qn, kn, vn): W[n] = W[n] * s1a
            if s_o is not None:
                W[vn] = W[vn] / sv[:, None]; W[on] = W[on] * s_o
            xo = ctx.reshape(-1, NH * HD) / (s_o if s_o is not None else 1.0)
            W[vn] = clip_search(W[vn], x1f / s1a, G, opt)[0]
            W[on] = clip_search(W[on], xo, G, opt)[0]
            for k, xx in ((qn, x1f / s1a), (kn, x1f / s1a), (vn, x1f / s1a), (on, xo)):
                W[k] = gptq_q(W[k], G, xx, None, opt.get('damp', 0.01), opt.get('actorder')) if opt.get('gptq') else fq(W[k], G)
            x1q_ = rms(hin, W[p + 'input_layernorm.weight'])
            h1 = hin + attn(x1q_, W[qn], W[kn], W[vn], W[on])
            x2 = rms(h1, W[p + 'post_attention_layernorm.weight'])
            x2f = x2.reshape(-1, D)
            routing = route(x2f, W[m + 'gate.weight'])
            moe_fp = moe(x2f, W, m, routing)
            h_next = h1 + moe_fp.view(S, L, D)
            attn_done = True
            s1 = torch.ones_like(s1); s_o = None
        # (3) norm -> w1,w3 all experts
        w13 = [W[f'{m}experts.{e}.{n}.weight'] for e in range(E) for n in ('w1', 'w3')]
        def l3(s):
            ws = {}
            for e in range(E):
                for n in ('w1', 'w3'):
                    k = f'{m}experts.{e}.{n}.weight'; ws[k] = fq(W[k] * s, G) / s
            return mse(moe(x2f, W, m, routing, ws), moe_fp)
        s3, a3 = search(x2f.abs().mean(0), w_mean_of(w13, G), l3, opt) if 'moe' not in skip else (torch.ones(D, device=dev), -1)
        # (4) per expert w3 -> w2
        wgt, idx = routing
        s4, acts = {}, {}
        for e in range(E):
            tok, slot = (idx == e).nonzero(as_tuple=True)
            xe = x2f[tok] if tok.numel() else x2f
            k1, k3, k2 = (f'{m}experts.{e}.{n}.weight' for n in ('w1', 'w3', 'w2'))
            y, act = expert(xe, W[k1], W[k3], W[k2], want_act=True)
            acts[e] = (xe, act, tok, slot)
            def l4(s):
                return mse(act @ (fq(W[k2] * s, G) / s).T, y)
            s4[e] = search(act.abs().mean(0), w_mean_of([W[k2]], G), l4, opt)[0] if 'w2' not in skip else torch.ones(I, device=dev)
        # apply
        if opt.get('pow2_s3'):
            s3 = torch.exp2(torch.round(torch.log2(s3)))
        if opt.get('bf16') and not opt.get('bf16_gate_only'):
            def fold(nk, s):
                n = W[nk]; r = (n / s).bfloat16().float()
                s_eff = torch.where((r != 0) & (n != 0), n / r, s)
                return s_eff
            s1 = fold(p + 'input_layernorm.weight', s1)
            s3 = fold(p + 'post_attention_layernorm.weight', s3)
        W[p + 'input_layernorm.weight'] = W[p + 'input_layernorm.weight'] / s1
        for n in (qn, kn, vn): W[n] = W[n] * s1
        if s_o is not None and not attn_done:
            W[vn] = W[vn] / sv[:, None]; W[on] = W[on] * s_o
        W[p + 'post_attention_layernorm.weight'] = W[p + 'post_attention_layernorm.weight'] / s3
        W[m + 'gate.weight'] = W[m + 'gate.weight'] * s3
        if opt.get('bf16'):
            W[m + 'gate.weight'] = W[m + 'gate.weight'].bfloat16().float()
        if opt.get('bf16') and not opt.get('bf16_gate_only') and not attn_done:
            W[p + 'input_layernorm.weight'] = W[p + 'input_layernorm.weight'].bfloat16().float()
        if opt.get('bf16') and not opt.get('bf16_gate_only'):
            W[p + 'post_attention_layernorm.weight'] = W[p + 'post_attention_layernorm.weight'].bfloat16().float()
        for e in range(E):
            k1, k3, k2 = (f'{m}experts.{e}.{n}.weight' for n in ('w1', 'w3', 'w2'))
            W[k1] = W[k1] * s3; W[k3] = W[k3] * s3
            W[k3] = W[k3] / s4[e][:, None]; W[k2] = W[k2] * s4[e]
        # clip
        ranges = {}
        refine_x = {}
        def do_clip(k, x):
            refine_x[k] = x
            if opt.get('no_clip'): return
            r = clip_search(W[k], x, G, opt)
            W[k] = r[0]
            if r[1] is not None: ranges[k] = r[1]
        if not attn_done:
            do_clip(vn, x1f / s1)
            do_clip(on, ctx.reshape(-1, NH * HD) / (s_o if s_o is not None else 1.0))
        if attn_done:
            pass
        elif opt.get('clip_qk'):
            do_clip(qn, x1f / s1); do_clip(kn, x1f / s1)
        else:
            refine_x[qn] = x1f / s1; refine_x[kn] = x1f / s1
        for e in range(E):
            xe, act, tok, slot = acts[e]
            k1, k3, k2 = (f'{m}experts.{e}.{n}.weight' for n in ('w1', 'w3', 'w2'))
            do_clip(k1, xe / s3); do_clip(k3, xe / s3); do_clip(k2, act / s4[e])
        # quantize
        names = ([] if attn_done else [qn, kn, vn, on]) + [f'{m}experts.{e}.{n}.weight' for e in range(E) for n in ('w1', 'w2', 'w3')]
        for k in names:
            if opt.get('only') and not any(t in k for t in opt['only']):
                continue
            if opt.get('gptq'):
                W[k] = gptq_q(W[k], G, refine_x[k], ranges.get(k), opt.get('damp', 0.01), opt.get('actorder'))
            elif opt.get('refine'):
                W[k] = refine_q(W[k], G, refine_x[k], ranges.get(k))
            elif k in ranges:
                W[k] = fq(W[k], G, *ranges[k])
            else:
                W[k] = fq(W[k], G)
        # next layer input
        h = h_next
        if opt.get('calib_on_quant'):
            x1q = rms(hq, W[p + 'input_layernorm.weight'])
            h1q = hq + attn(x1q, W[qn], W[kn], W[vn], W[on])
            x2q = rms(h1q, W[p + 'post_attention_layernorm.weight']).reshape(-1, D)
            hq = h1q + moe(x2q, W, m).view(S, L, D)
        if opt.get('verbose'):
            print(f'  layer {l}: a1={a1} a3={a3}', flush=True)
    return W

def rtn(W, G, which=None):
    W = {k: v.clone() for k, v in W.items()}
    for k in list(W):
        if '.layers.' in k and k.endswith('.weight') and ('_proj' in k or '.experts.' in k):
            if which is None or any(t in k for t in which):
                W[k] = fq(W[k], G)
    return W

if __name__ == '__main__':
    out = os.environ.get('OUT', '.lab/out')
    os.makedirs(out, exist_ok=True)
    res = open(f'{out}/lab.jsonl', 'a')
    def report(name, v, t0):
        line = json.dumps({'variant': name, 'ppl': v, 'seconds': round(time.time() - t0, 1)})
        print(line, flush=True); res.write(line + '\n'); res.flush()
    t0 = time.time(); report('fp32', ppl(W0), t0)
    plan = sys.argv[1] if len(sys.argv) > 1 else 'base'
    calib64 = torch.from_file('.lab/calib_64x512.i32', size=64 * 512, dtype=torch.int32).long().view(64, 512).to(dev)
    calib128 = torch.from_file('.lab/calib_128x512.i32', size=128 * 512, dtype=torch.int32).long().view(128, 512).to(dev)
    cs = lambda k: torch.from_file(f'.lab/calib_64x512_s{k}.i32', size=64 * 512, dtype=torch.int32).long().view(64, 512).to(dev)
    variants = {
        'rtn128': lambda: rtn(W0, 128),
        'rtn64': lambda: rtn(W0, 64),
        'rtn128_attn_only': lambda: rtn(W0, 128, ['self_attn']),
        'rtn128_qk_only': lambda: rtn(W0, 128, ['q_proj', 'k_proj']),
        'rtn128_experts_only': lambda: rtn(W0, 128, ['.experts.']),
        'rtn128_w2_only': lambda: rtn(W0, 128, ['.w2.']),
        'rtn128_w13_only': lambda: rtn(W0, 128, ['.w1.', '.w3.']),
        'awq128': lambda: awq(W0, calib64, {'G': 128, 'verbose': True}),
        'awq128_c128': lambda: awq(W0, calib128, {'G': 128}),
        'awq64': lambda: awq(W0, calib64, {'G': 64}),
        'awq128_asym': lambda: awq(W0, calib64, {'G': 128, 'clip_asym': True, 'clip_store_range': True}),
        'awq128_asym_c128': lambda: awq(W0, calib128, {'G': 128, 'clip_asym': True, 'clip_store_range': True}),
        'awq128_asymclamp': lambda: awq(W0, calib64, {'G': 128, 'clip_asym': True}),
        'awq128_clipqk': lambda: awq(W0, calib64, {'G': 128, 'clip_qk': True}),
        'awq128_asym_clipqk': lambda: awq(W0, calib64, {'G': 128, 'clip_asym': True, 'clip_store_range': True, 'clip_qk': True}),
        'awq128_noduo': lambda: awq(W0, calib64, {'G': 128, 'duo': False}),
        'awq128_grid40': lambda: awq(W0, calib64, {'G': 128, 'grid': 40}),
        'awq128_cq': lambda: awq(W0, calib64, {'G': 128, 'calib_on_quant': True}),
        'awq128_clipall': lambda: awq(W0, calib64, {'G': 128, 'clip_tokens': 1 << 30}),
        'awq128_attn_only': lambda: awq(W0, calib64, {'G': 128, 'only': ['self_attn']}),
        'awq128_experts_only': lambda: awq(W0, calib64, {'G': 128, 'only': ['.experts.']}),
        'awq128_o_only': lambda: awq(W0, calib64, {'G': 128, 'only': ['o_proj']}),
        'awq128_v_only': lambda: awq(W0, calib64, {'G': 128, 'only': ['v_proj']}),
        'awq128_qk_only': lambda: awq(W0, calib64, {'G': 128, 'only': ['q_proj', 'k_proj']}),
        'awq128_vo': lambda: awq(W0, calib64, {'G': 128, 'vo': True}),
        'awq128_vo_asym': lambda: awq(W0, calib64, {'G': 128, 'vo': True, 'clip_asym': True, 'clip_store_range': True}),
        'awq128_refine': lambda: awq(W0, calib64, {'G': 128, 'refine': True}),
        'awq128_vo_asym_refine': lambda: awq(W0, calib64, {'G': 128, 'vo': True, 'clip_asym': True, 'clip_store_range': True, 'refine': True}),
        'awq128_vo_asym_cq': lambda: awq(W0, calib64, {'G': 128, 'vo': True, 'clip_asym': True, 'clip_store_range': True, 'calib_on_quant': True}),
        'awq128_vo_asym_refine_cq': lambda: awq(W0, calib64, {'G': 128, 'vo': True, 'clip_asym': True, 'clip_store_range': True, 'refine': True, 'calib_on_quant': True}),
        'awq128_gptq': lambda: awq(W0, calib64, {'G': 128, 'gptq': True}),
        'awq128_vo_asym_gptq': lambda: awq(W0, calib64, {'G': 128, 'vo': True, 'clip_asym': True, 'clip_store_range': True, 'gptq': True}),
        'awq128_vo_gptq_cq': lambda: awq(W0, calib64, {'G': 128, 'vo': True, 'gptq': True, 'calib_on_quant': True}),
        'rtn128_gptq': lambda: awq(W0, calib64, {'G': 128, 'skip': {'attn', 'moe', 'w2'}, 'no_clip': True, 'gptq': True}),
        'awq128_vo_asym_refine_cq_c128': lambda: awq(W0, calib128, {'G': 128, 'vo': True, 'clip_asym': True, 'clip_store_range': True, 'refine': True, 'calib_on_quant': True}),
        'awq128_vo_gptq': lambda: awq(W0, calib64, {'G': 128, 'vo': True, 'gptq': True}),
        'awq128_gptq_cq': lambda: awq(W0, calib64, {'G': 128, 'gptq': True, 'calib_on_quant': True}),
        'awq128_vo_gptq_cq_c128': lambda: awq(W0, calib128, {'G': 128, 'vo': True, 'gptq': True, 'calib_on_quant': True}),
        'awq64_vo_gptq_cq': lambda: awq(W0, calib64, {'G': 64, 'vo': True, 'gptq': True, 'calib_on_quant': True}),
        'awq128_vo_gptq_cq_clipqk': lambda: awq(W0, calib64, {'G': 128, 'vo': True, 'gptq': True, 'calib_on_quant': True, 'clip_qk': True}),
        'awq128_vo_gptq_cq_noclip': lambda: awq(W0, calib64, {'G': 128, 'vo': True, 'gptq': True, 'calib_on_quant': True, 'no_clip': True}),
        'awq128_vo': lambda: awq(W0, calib64, {'G': 128, 'vo': True}),
        'awq128_vo_cq': lambda: awq(W0, calib64, {'G': 128, 'vo': True, 'calib_on_quant': True}),
        'awq128_vo_gptq_cq_bf16': lambda: awq(W0, calib64, {'G': 128, 'vo': True, 'gptq': True, 'calib_on_quant': True, 'bf16': True}),
        'awq128_bf16': lambda: awq(W0, calib64, {'G': 128, 'bf16': True}),
        'awq128_vo_gptq_cq_bf16gate': lambda: awq(W0, calib64, {'G': 128, 'vo': True, 'gptq': True, 'calib_on_quant': True, 'bf16': True, 'bf16_gate_only': True}),
        'awq128_vo_gptq_cq_bf16_pow2': lambda: awq(W0, calib64, {'G': 128, 'vo': True, 'gptq': True, 'calib_on_quant': True, 'bf16': True, 'pow2_s3': True}),
        'awq128_vo_gptq_cq_pow2': lambda: awq(W0, calib64, {'G': 128, 'vo': True, 'gptq': True, 'calib_on_quant': True, 'pow2_s3': True}),
        'awq128_vo_gptq_cq_s1': lambda: awq(W0, cs(1), {'G': 128, 'vo': True, 'gptq': True, 'calib_on_quant': True}),
        'awq128_vo_gptq_cq_s2': lambda: awq(W0, cs(2), {'G': 128, 'vo': True, 'gptq': True, 'calib_on_quant': True}),
        'awq128_vo_gptq_cq_bf16_s1': lambda: awq(W0, cs(1), {'G': 128, 'vo': True, 'gptq': True, 'calib_on_quant': True, 'bf16': True}),
        'awq128_vo_gptq_cq_bf16_s2': lambda: awq(W0, cs(2), {'G': 128, 'vo': True, 'gptq': True, 'calib_on_quant': True, 'bf16': True}),
        'awq128_vo_gptq_bf16': lambda: awq(W0, calib64, {'G': 128, 'vo': True, 'gptq': True, 'bf16': True}),
        'awq128_vo_gptq_bf16_s1': lambda: awq(W0, cs(1), {'G': 128, 'vo': True, 'gptq': True, 'bf16': True}),
        'B': lambda: awq(W0, calib64, {'G': 128, 'vo': True, 'gptq': True, 'calib_on_quant': True, 'bf16': True}),
        'B_act': lambda: awq(W0, calib64, {'G': 128, 'vo': True, 'gptq': True, 'calib_on_quant': True, 'bf16': True, 'actorder': True}),
        'B_damp1': lambda: awq(W0, calib64, {'G': 128, 'vo': True, 'gptq': True, 'calib_on_quant': True, 'bf16': True, 'damp': 0.1}),
        'B_damp001': lambda: awq(W0, calib64, {'G': 128, 'vo': True, 'gptq': True, 'calib_on_quant': True, 'bf16': True, 'damp': 0.001}),
        'B_seq': lambda: awq(W0, calib64, {'G': 128, 'vo': True, 'gptq': True, 'calib_on_quant': True, 'bf16': True, 'seq': True}),
        'B_seq_act': lambda: awq(W0, calib64, {'G': 128, 'vo': True, 'gptq': True, 'calib_on_quant': True, 'bf16': True, 'seq': True, 'actorder': True}),
        'B_act_s1': lambda: awq(W0, cs(1), {'G': 128, 'vo': True, 'gptq': True, 'calib_on_quant': True, 'bf16': True, 'actorder': True}),
        'B_seq_s1': lambda: awq(W0, cs(1), {'G': 128, 'vo': True, 'gptq': True, 'calib_on_quant': True, 'bf16': True, 'seq': True}),
        'B_act_s2': lambda: awq(W0, cs(2), {'G': 128, 'vo': True, 'gptq': True, 'calib_on_quant': True, 'bf16': True, 'actorder': True}),
        'B_act_d1': lambda: awq(W0, calib64, {'G': 128, 'vo': True, 'gptq': True, 'calib_on_quant': True, 'bf16': True, 'actorder': True, 'damp': 0.1}),
        'B_act_d1_s1': lambda: awq(W0, cs(1), {'G': 128, 'vo': True, 'gptq': True, 'calib_on_quant': True, 'bf16': True, 'actorder': True, 'damp': 0.1}),
        'B_act_d1_s2': lambda: awq(W0, cs(2), {'G': 128, 'vo': True, 'gptq': True, 'calib_on_quant': True, 'bf16': True, 'actorder': True, 'damp': 0.1}),
        'B_act_c128': lambda: awq(W0, calib128, {'G': 128, 'vo': True, 'gptq': True, 'calib_on_quant': True, 'bf16': True, 'actorder': True}),
        'B_act_g64': lambda: awq(W0, calib64, {'G': 64, 'vo': True, 'gptq': True, 'calib_on_quant': True, 'bf16': True, 'actorder': True}),
        'B_act_nocq': lambda: awq(W0, calib64, {'G': 128, 'vo': True, 'gptq': True, 'bf16': True, 'actorder': True}),
        'B_act_novo': lambda: awq(W0, calib64, {'G': 128, 'gptq': True, 'calib_on_quant': True, 'bf16': True, 'actorder': True}),
        'rtn128_gptq_act': lambda: awq(W0, calib64, {'G': 128, 'skip': {'attn', 'moe', 'w2'}, 'no_clip': True, 'gptq': True, 'actorder': True, 'calib_on_quant': True}),
        'awq128_noclip': lambda: awq(W0, calib64, {'G': 128, 'no_clip': True}),
    }
    for name in plan.split(','):
        t0 = time.time()
        report(name, ppl(variants[name]()), t0)
