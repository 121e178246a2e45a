#!/usr/bin/env python3
"""Generate the fidelity reference fixtures for attnscope.

Runs Hugging Face transformers (eager attention, output_attentions=True, fp32,
CPU) on the default model GGUF (SmolLM2-135M-Instruct Q4_1, dequantised by
transformers' own GGUF loader) and writes one small JSON file that the C++
tests compare against:

    tests/fixtures/reference/smollm2_reference.json

See tests/reference/README.md for how to run it and what each field means.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import random
import shlex
import sys
import time
from importlib import metadata
from pathlib import Path

# Never reach a model hub: everything comes from the local GGUF.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TQDM_DISABLE", "1")  # the GGUF dequantisation progress bar

import numpy as np  # noqa: E402
import torch  # noqa: E402

MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO_ROOT / "tests" / "fixtures" / "reference"
OUT_NAME = "smollm2_reference.json"
SEED = 1234
THREADS = 2
TOPK = 20
GREEDY_STEPS = 16
LSE_LAYERS = (0, 29)

# (layer, head, query) with query given symbolically: "last" = n-1, "mid" = n//2.
TRIPLES = [
    (0, 0, "last"),
    (0, 8, "last"),
    (5, 3, "mid"),
    (14, 4, "last"),
    (22, 7, 1),
    (29, 8, "last"),
    (29, 0, "mid"),
]

PROMPTS = [
    (
        "english",
        "The old lighthouse keeper climbed the spiral stairs every evening, "
        "carrying a small lamp and a notebook in which he recorded the wind, "
        "the colour of the sea and the ships that passed.",
    ),
    (
        "chinese",
        "春天来了，公园里的花都开了，孩子们在草地上玩。",
    ),
    (
        "code",
        "def fibonacci(n):\n"
        "    \"\"\"Return the n-th Fibonacci number.\"\"\"\n"
        "    if n < 2:\n"
        "        return n\n"
        "    a, b = 0, 1\n"
        "    for _ in range(n - 1):\n"
        "        a, b = b, a + b\n"
        "    return b\n",
    ),
    (
        "long_english",
        "The river town woke slowly in the grey light of early spring. Fishermen "
        "pushed their boats from the muddy bank, bakers opened their shutters, and "
        "the smell of fresh bread drifted along the narrow streets toward the market "
        "square, where traders were already setting out baskets of apples, onions and "
        "dried fish.\n\n"
        "At the edge of the square stood the library, a modest stone building with a "
        "clock that had not worked for thirty years. Its librarian, a patient woman "
        "named Clara, arrived each morning before anyone else. She swept the steps, "
        "watered the geraniums on the windowsill, and unlocked the heavy oak door with "
        "a key that had belonged to her grandmother.\n\n"
        "Most visitors came for newspapers or for shelter from the rain, but a few "
        "came for the maps. The library kept a collection of charts drawn by the "
        "sailors who had once traded along the coast, and Clara knew every one of them. "
        "When a child asked her where the river ended, she would unroll the largest "
        "map on the long table, place a finger on the town, and trace the blue line "
        "slowly toward the sea.",
    ),
]
CHAT_MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def f64(x) -> float:
    """float32 (or any) scalar -> Python float (float64 repr in JSON)."""
    return float(x)


def default_model_path() -> Path:
    base = os.environ.get("ATTNSCOPE_MODELS") or str(Path.home() / ".cache" / "attnscope" / "models")
    return Path(base) / MODEL_FILE


def pkg_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "unknown"


# --------------------------------------------------------------------------------------
# LSE capture: wrap transformers' eager attention function for the llama family.
# --------------------------------------------------------------------------------------
class LseCapture:
    """Captures, per layer, the natural-log log-sum-exp of each query row of the
    scaled, masked attention scores (computed from the post-RoPE query/key states
    exactly as eager attention does), and checks that exp(score - LSE) reproduces
    the probabilities eager attention returned (the identity attnscope relies on)."""

    def __init__(self):
        self.enabled = False
        self.calls = 0
        self.lse = {}  # layer -> tensor [heads, n] float64
        self.recompute_max_abs_err = 0.0
        self.installed = False
        self.error = None

    def install(self):
        try:
            import transformers.models.llama.modeling_llama as ml
        except Exception as e:  # pragma: no cover
            self.error = f"cannot import modeling_llama: {e!r}"
            return
        orig = getattr(ml, "eager_attention_forward", None)
        repeat_kv = getattr(ml, "repeat_kv", None)
        if orig is None or repeat_kv is None:
            self.error = "modeling_llama has no eager_attention_forward/repeat_kv"
            return
        cap = self

        def wrapped(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
            out, weights = orig(module, query, key, value, attention_mask, scaling, dropout=dropout, **kwargs)
            if cap.enabled:
                cap.calls += 1
                k = repeat_kv(key, module.num_key_value_groups)
                scores = torch.matmul(query, k.transpose(2, 3)) * scaling  # fp32, like eager
                if attention_mask is not None:
                    scores = scores + attention_mask
                s64 = scores.double()
                lse = torch.logsumexp(s64, dim=-1)  # [b, h, n]
                layer = int(module.layer_idx)
                cap.lse[layer] = lse[0].clone()
                if weights is not None:
                    p = torch.exp(s64 - lse.unsqueeze(-1))
                    err = (p - weights.double()).abs().max().item()
                    cap.recompute_max_abs_err = max(cap.recompute_max_abs_err, err)
            return out, weights

        ml.eager_attention_forward = wrapped
        self.installed = True


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None,
                    help=f"path to {MODEL_FILE} (or its folder); default $ATTNSCOPE_MODELS or "
                         f"~/.cache/attnscope/models, file {MODEL_FILE}")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    ap.add_argument("--skip-sha-check", action="store_true", help="do not verify the model's SHA-256")
    args = ap.parse_args()

    t_start = time.time()
    model_path = args.model or default_model_path()
    if model_path.is_dir():
        model_path = model_path / MODEL_FILE
    if not model_path.is_file():
        print(f"error: model not found: {model_path}", file=sys.stderr)
        return 2
    sha = sha256_file(model_path)
    if sha != MODEL_SHA256 and not args.skip_sha_check:
        print(f"error: sha256 mismatch for {model_path}: {sha} != {MODEL_SHA256}", file=sys.stderr)
        return 3

    # Determinism: fixed threads and seeds.
    torch.set_num_threads(THREADS)
    random.seed(SEED)
    np.random.seed(SEED)
    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)

    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()

    cap = LseCapture()
    cap.install()  # must happen before the first forward; patches a module global

    model_dir, gguf_name = str(model_path.parent), model_path.name
    t0 = time.time()
    tok = AutoTokenizer.from_pretrained(model_dir, gguf_file=gguf_name)
    model = AutoModelForCausalLM.from_pretrained(
        model_dir, gguf_file=gguf_name, dtype=torch.float32, attn_implementation="eager"
    )
    model.eval()
    t_load = time.time() - t0
    cfg = model.config
    n_layers, n_heads = cfg.num_hidden_layers, cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", cfg.hidden_size // n_heads)
    assert model.dtype == torch.float32
    assert model.config._attn_implementation == "eager", model.config._attn_implementation

    chat_text = tok.apply_chat_template(CHAT_MESSAGES, tokenize=False, add_generation_prompt=True)
    prompts = list(PROMPTS) + [("chat", chat_text)]

    eos_id = tok.eos_token_id
    gen_cfg = GenerationConfig(
        do_sample=False,
        num_beams=1,
        max_new_tokens=GREEDY_STEPS,
        min_new_tokens=0,          # no EOS suppression: plain argmax at every step
        eos_token_id=None,         # no early stop either: exactly 16 new tokens
        pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else eos_id,
        bos_token_id=None,
        use_cache=True,
    )

    # generate() fills unset fields from the model's generation config (eos_token_id=2 there),
    # so clear it there too; otherwise the chat prompt stops at <|im_end|>.
    model.generation_config.eos_token_id = None

    results = {}
    summary = []
    for name, text in prompts:
        enc = tok(text, return_tensors="pt")  # add_special_tokens default; add_bos_token is False
        ids = enc["input_ids"]
        n = ids.shape[1]
        token_ids = ids[0].tolist()

        cap.enabled = True
        cap.calls = 0
        cap.lse = {}
        with torch.no_grad():
            out = model(input_ids=ids, attention_mask=enc["attention_mask"], output_attentions=True, use_cache=False)
        cap.enabled = False
        lse_ok = cap.installed and cap.calls == n_layers and len(cap.lse) == n_layers

        logits = out.logits[0, -1].float()  # [vocab] fp32
        l64 = logits.double()
        top = torch.topk(logits, TOPK)
        top20 = [[int(i), f64(v)] for v, i in zip(top.values.tolist(), top.indices.tolist())]

        attn = []
        row_sum_err = 0.0
        for layer, head, q in TRIPLES:
            qi = n - 1 if q == "last" else (n // 2 if q == "mid" else int(q))
            row = out.attentions[layer][0, head, qi].float()
            assert float(row[qi + 1:].abs().max() if qi + 1 < n else 0.0) == 0.0, "non-causal mass"
            probs = row[: qi + 1]
            row_sum_err = max(row_sum_err, abs(float(probs.double().sum()) - 1.0))
            attn.append({"layer": layer, "head": head, "query": qi, "probs": [f64(p) for p in probs.tolist()]})

        # Greedy continuation with HF generate (KV cache) ...
        with torch.no_grad():
            g = model.generate(input_ids=ids, attention_mask=enc["attention_mask"], generation_config=gen_cfg)
        new_ids = g[0, n:].tolist()
        assert len(new_ids) == GREEDY_STEPS, (name, len(new_ids))
        # ... cross-checked with a cache-free argmax loop; also record each step's top1-top2 margin.
        seq = ids.clone()
        manual, margins = [], []
        with torch.no_grad():
            for _ in range(GREEDY_STEPS):
                lg = model(input_ids=seq, use_cache=False).logits[0, -1].float()
                t2 = torch.topk(lg, 2)
                nxt = int(t2.indices[0])
                manual.append(nxt)
                margins.append(f64(t2.values[0] - t2.values[1]))
                seq = torch.cat([seq, torch.tensor([[nxt]])], dim=1)
        greedy_text = tok.decode(new_ids, skip_special_tokens=False)

        entry = {
            "text": text,
            "n_tokens": n,
            "token_ids": token_ids,
            "tokens": tok.convert_ids_to_tokens(token_ids),
            "last_logits_top20": top20,
            "logits_checksum": {"sum": float(l64.sum()), "sum_sq": float((l64 * l64).sum()),
                                "vocab": int(logits.numel())},
            "attention": attn,
            "greedy16": new_ids,
            "greedy16_text": greedy_text,
            "greedy16_eos_appeared": bool(eos_id is not None and eos_id in new_ids),
            "greedy16_first_eos_step": (new_ids.index(eos_id) if eos_id in new_ids else None),
            "greedy16_margins": margins,
            "greedy16_matches_nocache_argmax": manual == new_ids,
        }
        if lse_ok:
            entry["hidden_check"] = {
                "lse": [
                    {"layer": L, "query": n - 1,
                     "values": [float(v) for v in cap.lse[L][:, n - 1].tolist()]}
                    for L in LSE_LAYERS
                ],
                "recompute_max_abs_err": cap.recompute_max_abs_err,
            }
        else:
            entry["hidden_check"] = {"skipped": cap.error or f"eager hook ran {cap.calls}/{n_layers} times"}
        results[name] = entry
        summary.append((name, n, row_sum_err, entry["greedy16_eos_appeared"], manual == new_ids,
                        min(margins), greedy_text))
        cap.recompute_max_abs_err = 0.0

    cmd = shlex.join([sys.executable] + sys.argv)
    doc = {
        "meta": {
            "generator": "tests/reference/make_reference.py",
            "command": cmd,
            "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "versions": {
                "python": platform.python_version(),
                "transformers": transformers.__version__,
                "torch": torch.__version__,
                "gguf": pkg_version("gguf"),
                "tokenizers": pkg_version("tokenizers"),
                "numpy": np.__version__,
                "accelerate": pkg_version("accelerate"),
            },
            "model": {
                "file": MODEL_FILE,
                "sha256": sha,
                "arch": cfg.model_type,
                "n_layers": n_layers,
                "n_heads": n_heads,
                "n_kv_heads": cfg.num_key_value_heads,
                "head_dim": head_dim,
                "hidden_size": cfg.hidden_size,
                "vocab_size": cfg.vocab_size,
                "rope_theta": (getattr(cfg, "rope_parameters", None) or {}).get("rope_theta",
                                                                              getattr(cfg, "rope_theta", None)),
                "rms_norm_eps": cfg.rms_norm_eps,
                "tie_word_embeddings": bool(cfg.tie_word_embeddings),
            },
            "run": {
                "device": "cpu",
                "dtype": "float32",
                "attn_implementation": "eager",
                "torch_threads": THREADS,
                "seed": SEED,
                "tokenize": "tokenizer(text) with default add_special_tokens=True; add_bos_token is "
                            f"{getattr(tok, 'add_bos_token', None)}, so no BOS is added",
                "chat_messages": CHAT_MESSAGES,
                "attention_scale": head_dim ** -0.5,
                "triples": [[l, h, q] for l, h, q in TRIPLES],
                "triples_note": "query 'last' = n-1, 'mid' = n//2; probs are the row over keys 0..query",
                "greedy": "generate(do_sample=False, max_new_tokens=16, eos_token_id=None): plain argmax, "
                          "no early stop and no EOS suppression; greedy16_margins = top1-top2 logit per step",
                "lse": "natural-log logsumexp of scale*q.k + causal mask, last query, per head, layers "
                       f"{list(LSE_LAYERS)}; P[j] = exp(scale*q.k_j - LSE)",
                "floats": "float32 values widened to float64 and printed with Python repr",
                "eos_token_id": eos_id,
            },
            "load_seconds": round(t_load, 2),
        },
        "prompts": results,
    }

    elapsed = time.time() - t_start
    doc["meta"]["script_seconds"] = round(elapsed, 2)
    args.out.mkdir(parents=True, exist_ok=True)
    out_path = args.out / OUT_NAME
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, indent=1)
        f.write("\n")

    print(f"wrote {out_path} ({out_path.stat().st_size} bytes) in {elapsed:.1f}s "
          f"(load {t_load:.1f}s); transformers {transformers.__version__}, torch {torch.__version__}, "
          f"gguf {pkg_version('gguf')}")
    print(f"LSE capture: {'ok' if cap.installed else 'skipped: ' + str(cap.error)}")
    for name, n, rs, eos, match, mmin, gt in summary:
        print(f"  {name:13s} n={n:4d} max|rowsum-1|={rs:.2e} eos={eos!s:5s} gen==nocache:{match!s:5s} "
              f"min_margin={mmin:.3f} greedy16={gt!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
