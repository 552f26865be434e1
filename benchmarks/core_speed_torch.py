"""PyTorch eager baselines for benchmarks/core_speed.py (run in their own process).

Same configs as core_speed.py: gpt2 tiny training step (forward, backward,
clipping, AdamW), KV-cached greedy generation at batch 1, and the MLP
classifier training step. Prints one JSON object of medians.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time

import torch
import torch.nn.functional as F

LM = dict(n_layer=2, d_model=128, n_head=4, n_ctx=64, vocab_size=1024)
LM_BATCH = 16
MLP_SIZES = (64, 128, 64, 10)
MLP_BATCH = 128


def median_rate(fn, units, repeats, inner):
    fn()
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        rates.append(units * inner / (time.perf_counter() - t0))
    return statistics.median(rates)


def gpt2_params(gen):
    C, L, V, T = LM["d_model"], LM["n_layer"], LM["vocab_size"], LM["n_ctx"]

    def w(*shape):
        return (torch.randn(*shape, generator=gen) * 0.02).requires_grad_()

    def z(*shape):
        return torch.zeros(*shape).requires_grad_()

    def o(*shape):
        return torch.ones(*shape).requires_grad_()

    p = {"wte": w(V, C), "wpe": w(T, C), "lnf_w": o(C), "lnf_b": z(C), "layers": []}
    for _ in range(L):
        p["layers"].append(dict(
            ln1_w=o(C), ln1_b=z(C), attn_w=w(C, 3 * C), attn_b=z(3 * C), proj_w=w(C, C),
            proj_b=z(C), ln2_w=o(C), ln2_b=z(C), fc_w=w(C, 4 * C), fc_b=z(4 * C),
            fc2_w=w(4 * C, C), fc2_b=z(C),
        ))  # fmt: skip
    return p


def flat(p):
    out = [p["wte"], p["wpe"], p["lnf_w"], p["lnf_b"]]
    for layer in p["layers"]:
        out += list(layer.values())
    return out


def attention(q, k, v, n_head, causal=True):
    B, Tq, C = q.shape
    Tk = k.shape[1]
    hd = C // n_head
    q = q.view(B, Tq, n_head, hd).transpose(1, 2)
    k = k.view(B, Tk, n_head, hd).transpose(1, 2)
    v = v.view(B, Tk, n_head, hd).transpose(1, 2)
    s = q @ k.transpose(-1, -2) / math.sqrt(hd)
    if causal and Tq > 1:
        mask = torch.triu(torch.ones(Tq, Tk, dtype=torch.bool), 1)
        s = s.masked_fill(mask, float("-inf"))
    return (s.softmax(-1) @ v).transpose(1, 2).reshape(B, Tq, C)


def block(x, lp, n_head, cache=None):
    """One pre-LN block; ``cache`` is a per-layer list holding [k_all, v_all] once filled."""
    C = x.shape[-1]
    h = F.layer_norm(x, (C,), lp["ln1_w"], lp["ln1_b"], 1e-5)
    q, k, v = (h @ lp["attn_w"] + lp["attn_b"]).split(C, dim=-1)
    causal = True
    if cache is not None:
        if cache:
            k, v = torch.cat([cache[0], k], 1), torch.cat([cache[1], v], 1)
        cache[:] = [k, v]
        causal = q.shape[1] > 1  # the prompt is causal; one new token sees every past one
    x = x + attention(q, k, v, n_head, causal) @ lp["proj_w"] + lp["proj_b"]
    h = F.layer_norm(x, (C,), lp["ln2_w"], lp["ln2_b"], 1e-5)
    h = F.gelu(h @ lp["fc_w"] + lp["fc_b"], approximate="tanh")
    return x + h @ lp["fc2_w"] + lp["fc2_b"]


def gpt2_logits(p, tokens, pos0=0, caches=None):
    T = tokens.shape[1]
    x = p["wte"][tokens] + p["wpe"][pos0 : pos0 + T]
    for i, lp in enumerate(p["layers"]):
        x = block(x, lp, LM["n_head"], None if caches is None else caches[i])
    x = F.layer_norm(x, (x.shape[-1],), p["lnf_w"], p["lnf_b"], 1e-5)
    return x @ p["wte"].T


def lm_steps():
    """(train step, generate call) for the gpt2 tiny config."""
    gen = torch.Generator().manual_seed(0)
    p = gpt2_params(gen)
    params = flat(p)
    opt = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)
    batch = torch.randint(0, LM["vocab_size"], (LM_BATCH, LM["n_ctx"] + 1), generator=gen)

    def step():
        opt.zero_grad(set_to_none=True)
        logits = gpt2_logits(p, batch[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()

    prompt = batch[:1, :8]
    max_new = LM["n_ctx"] - prompt.shape[1]

    @torch.no_grad()
    def generate():
        caches = [[] for _ in p["layers"]]
        logits = gpt2_logits(p, prompt, 0, caches)[:, -1]
        pos = prompt.shape[1]
        for _ in range(max_new - 1):
            nxt = logits.argmax(-1, keepdim=True)
            logits = gpt2_logits(p, nxt, pos, caches)[:, -1]
            pos += 1

    return step, generate


def mlp_step():
    torch.manual_seed(0)
    layers = []
    for i in range(len(MLP_SIZES) - 1):
        layers.append(torch.nn.Linear(MLP_SIZES[i], MLP_SIZES[i + 1]))
        if i < len(MLP_SIZES) - 2:
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.rand(MLP_BATCH, MLP_SIZES[0])
    y = torch.randint(0, MLP_SIZES[-1], (MLP_BATCH,))

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    return step


def workloads():
    """name -> (callable, units per call); names as in core_speed.py."""
    train, generate = lm_steps()
    max_new = LM["n_ctx"] - 8
    return {
        "lm_train": (train, LM_BATCH * LM["n_ctx"]),
        "generation": (generate, max_new),
        "mlp_train": (mlp_step(), MLP_BATCH),
    }


def serve(threads: int) -> None:
    """Line protocol for core_speed.py: read ``<workload> <calls>``, print units/s.

    The parent interleaves these bursts with its own engines, so every engine
    meets the same machine noise; a warm-up call runs before the first burst.
    """
    import sys

    torch.set_num_threads(threads)
    loads = workloads()
    for fn, _ in loads.values():
        fn()
    print(json.dumps({"version": torch.__version__, "threads": threads}), flush=True)
    for line in sys.stdin:
        name, calls = line.split()
        fn, units = loads[name]
        t0 = time.perf_counter()
        for _ in range(int(calls)):
            fn()
        print(units * int(calls) / (time.perf_counter() - t0), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--inner", type=int, default=5)
    ap.add_argument("--serve", action="store_true", help="the line protocol for core_speed.py")
    args = ap.parse_args()
    if args.serve:
        serve(args.threads)
        return
    torch.set_num_threads(args.threads)
    out = {"version": torch.__version__, "threads": args.threads}
    for name, (fn, units) in workloads().items():
        inner = {"lm_train": args.inner, "mlp_train": args.inner * 10}.get(name, 1)
        out[name] = median_rate(fn, units, args.repeats, inner)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
