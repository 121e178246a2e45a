#!/usr/bin/env python3
"""Generate tiny Hugging Face checkpoints of every architecture the loader supports, with
reference outputs from transformers, for tests/test_hf_models.cpp.

Writes tests/fixtures/tiny_models/<name>/ for

  tiny_llama         LlamaForCausalLM, GQA 4/2, head_dim 16 != hidden/heads, untied,
                     rope_type llama3 (factor 8, original context 32, so all three frequency
                     bands occur), rope_theta 2000, BOS added by the tokenizer's post-processor
  tiny_llama_linear  LlamaForCausalLM, GQA 4/2 (head_dim 12), tied embeddings, linear RoPE
                     scaling x2, stored in bfloat16, config.json rewritten in the *legacy*
                     layout (top-level rope_theta + rope_scaling {"type": "linear"}) that
                     checkpoints saved before transformers 5 use
  tiny_qwen2         Qwen2ForCausalLM (q/k/v bias), GQA 4/2, sharded safetensors + index
  tiny_mistral       MistralForCausalLM, MQA 4/1, sliding_window 8 (matters at 24 tokens)
  tiny_gpt2          GPT2LMHeadModel, n_embd 32, n_head 4, n_layer 2, n_positions 64

Each directory is what save_pretrained writes (config.json, generation_config.json,
model.safetensors or shards + model.safetensors.index.json), plus the tokenizer
(tokenizer.json + tokenizer_config.json: a byte-level BPE trained here with the
`tokenizers` library, shared by all models) and reference.json.

The reference is always computed from the checkpoint *as saved*: every model is loaded
back from its directory with from_pretrained(dtype=float32, attn_implementation="eager")
(for the bf16 model that means the bf16-rounded weights, upcast), and run on the CPU
with output_attentions=True. Weights are re-initialised with larger scales than HF's
defaults so attention is peaked (not uniform), norms and biases are non-trivial and
greedy margins are large.

Usage:
    /tmp/refvenv/bin/python tests/reference/make_tiny_models.py [--out DIR]

Needs torch, transformers (tested with 5.24.0), tokenizers, safetensors, numpy.
Deterministic: rerunning gives byte-identical weights, tokenizer and reference numbers
(only meta.date_utc changes).
"""

from __future__ import annotations

import argparse
import datetime
import inspect
import json
import os
import platform
import shlex
import shutil
import sys
from importlib import metadata
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers  # noqa: E402
import transformers  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForCausalLM,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO_ROOT / "tests" / "fixtures" / "tiny_models"
SEED = 20240607
VOCAB = 448
GREEDY_STEPS = 8
MIN_MARGIN = 0.05  # top-1 minus top-2 logit at every greedy step
MIN_DISTINCT = 4  # distinct ids among the 8 greedy tokens
MAX_SEED_ATTEMPTS = 50
SPECIAL_TOKENS = ["<|endoftext|>", "<s>", "</s>"]  # ids 0, 1, 2

# Training text for the tokenizer (a few paragraphs; mixed case, digits, punctuation, a few
# multi-byte characters so byte-level merges of UTF-8 sequences appear).
CORPUS = [
    "The quick brown fox jumps over the lazy dog. The dog did not mind; it was asleep in the sun, "
    "and the fox was gone before anyone noticed.",
    "Attention is all you need. Every head attends to the tokens it likes: some look at the first "
    "token, some at the previous one, and some copy what followed an earlier match.",
    "A small café in Zürich serves crème brûlée and naïve coffee. Prices: 12.50 CHF, 3 × 4 = 12. "
    "Opening hours are 08:00 to 18:30, every day except Sunday.",
    "Transformers read text as tokens. A tokenizer splits the text into pieces, and the model "
    "predicts the next piece, one step at a time, until it stops.",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 40))\n",
]

# The prompt every model is run on (~24 tokens; it contains a special token in the middle
# and a multi-byte character).
PROMPT = "The fox attends to the café.<|endoftext|> Every head looks at 12 tokens, then the dog"

# (layer, head, query); "last" = n-1, "mid" = n//2. head "H-1" = the model's last head.
TRIPLES = [(0, 0, "last"), (0, "H-1", "last"), (1, 1, "mid"), (1, "H-1", "last"), (1, 0, 3), (0, 2, 17)]


def pkg_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "absent"


def f64(x) -> float:
    return float(np.float64(np.float32(x)))


# ---- tokenizer -------------------------------------------------------------------------


def train_tokenizer(bos_post_processor: bool) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    assert tok.get_vocab_size() == VOCAB, tok.get_vocab_size()
    if bos_post_processor:
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tok.token_to_id("<s>"))]
        )
    return tok


def save_tokenizer(tok: Tokenizer, directory: Path) -> PreTrainedTokenizerFast:
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token=None)
    fast.save_pretrained(str(directory))
    # Reload from disk, the way a user would, to make the reference ids.
    return PreTrainedTokenizerFast.from_pretrained(str(directory))


# ---- models ------------------------------------------------------------------------------


def reinit_(model: torch.nn.Module, gpt2: bool) -> None:
    """Deterministic re-initialisation with scales that make the tiny model behave like a
    real one numerically: O(1) activations, peaked attention, spread logits."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.split(".")[-2] if "." in name else name
            if p.dim() == 1:
                if "norm" in name or "ln_" in name:
                    if name.endswith("weight"):
                        p.copy_(1.0 + 0.2 * torch.randn_like(p))
                    else:
                        p.copy_(0.1 * torch.randn_like(p))
                else:  # projection biases
                    p.copy_(0.2 * torch.randn_like(p))
            elif leaf in ("embed_tokens", "wte"):
                # Tied: the same matrix makes the logits, so keep them O(1) there too.
                tied = getattr(model.config, "tie_word_embeddings", False)
                p.copy_((0.3 if tied else 1.0) * torch.randn_like(p))
            elif leaf == "wpe":
                p.copy_(0.5 * torch.randn_like(p))
            else:
                # nn.Linear stores {out, in}; GPT-2's Conv1D stores {in, out}.
                fan_in = p.shape[0] if gpt2 and leaf in ("c_attn", "c_proj", "c_fc") else p.shape[1]
                gain = 1.5 if leaf in ("q_proj", "k_proj", "c_attn") else 1.0
                if leaf == "lm_head":
                    gain = 2.0
                p.copy_(gain / np.sqrt(fan_in) * torch.randn_like(p))
    if getattr(model.config, "tie_word_embeddings", False):
        model.tie_weights()


def save_model(model, directory: Path, dtype: torch.dtype, max_shard_size: str | None) -> None:
    model = model.to(dtype)
    kwargs = {}
    params = inspect.signature(model.save_pretrained).parameters
    if "safe_serialization" in params:  # transformers < 5; 5.x always writes safetensors
        kwargs["safe_serialization"] = True
    if max_shard_size:
        kwargs["max_shard_size"] = max_shard_size
    model.save_pretrained(str(directory), **kwargs)


def legacy_rope_config(directory: Path) -> None:
    """Rewrites config.json into the pre-transformers-5 layout (rope_theta at top level,
    rope_scaling {"type": ...}) that most published checkpoints use."""
    path = directory / "config.json"
    config = json.loads(path.read_text())
    rope = config.pop("rope_parameters")
    config["rope_theta"] = rope.pop("rope_theta")
    rope_type = rope.pop("rope_type")
    if rope_type != "default":
        config["rope_scaling"] = {"type": rope_type, **rope}
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def model_specs():
    common = dict(vocab_size=VOCAB, bos_token_id=1, eos_token_id=2, pad_token_id=None)
    return [
        dict(
            name="tiny_llama",
            cls=LlamaForCausalLM,
            bos=True,
            config=LlamaConfig(
                hidden_size=32, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                num_hidden_layers=2, intermediate_size=64, max_position_embeddings=256,
                rms_norm_eps=1e-5, tie_word_embeddings=False,
                rope_parameters={"rope_type": "llama3", "rope_theta": 2000.0, "factor": 8.0,
                                 "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                 "original_max_position_embeddings": 32},
                **common),
            dtype=torch.float32, shard=None, legacy=False,
            expect=dict(rope_scaling="llama3", rope_factor=8.0, rope_theta=2000.0, sliding_window=0,
                        tied=False, qkv_bias=False),
        ),
        dict(
            name="tiny_llama_linear",
            cls=LlamaForCausalLM,
            bos=True,
            config=LlamaConfig(
                hidden_size=48, num_attention_heads=4, num_key_value_heads=2,
                num_hidden_layers=2, intermediate_size=96, max_position_embeddings=128,
                rms_norm_eps=1e-6, tie_word_embeddings=True,
                rope_parameters={"rope_type": "linear", "rope_theta": 50000.0, "factor": 2.0},
                **common),
            dtype=torch.bfloat16, shard=None, legacy=True,
            expect=dict(rope_scaling="linear", rope_factor=2.0, rope_theta=50000.0, sliding_window=0,
                        tied=True, qkv_bias=False),
        ),
        dict(
            name="tiny_qwen2",
            cls=Qwen2ForCausalLM,
            bos=False,
            config=Qwen2Config(
                hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                num_hidden_layers=2, intermediate_size=64, max_position_embeddings=512,
                rms_norm_eps=1e-6, tie_word_embeddings=False, use_sliding_window=False,
                rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
                **common),
            dtype=torch.float32, shard="40KB", legacy=False,
            expect=dict(rope_scaling="none", rope_factor=1.0, rope_theta=1000000.0, sliding_window=0,
                        tied=False, qkv_bias=True),
        ),
        dict(
            name="tiny_mistral",
            cls=MistralForCausalLM,
            bos=False,
            config=MistralConfig(
                hidden_size=32, num_attention_heads=4, num_key_value_heads=1, head_dim=8,
                num_hidden_layers=2, intermediate_size=64, max_position_embeddings=512,
                rms_norm_eps=1e-5, tie_word_embeddings=False, sliding_window=8,
                rope_parameters={"rope_type": "default", "rope_theta": 100000.0},
                **common),
            dtype=torch.float32, shard=None, legacy=False,
            expect=dict(rope_scaling="none", rope_factor=1.0, rope_theta=100000.0, sliding_window=8,
                        tied=False, qkv_bias=False),
        ),
        dict(
            name="tiny_gpt2",
            cls=GPT2LMHeadModel,
            bos=False,
            config=GPT2Config(
                n_embd=32, n_head=4, n_layer=2, n_positions=64, n_inner=None,
                layer_norm_epsilon=1e-5, activation_function="gelu_new",
                vocab_size=VOCAB, bos_token_id=0, eos_token_id=0),
            dtype=torch.float32, shard=None, legacy=False,
            expect=dict(rope_scaling="none", rope_factor=1.0, rope_theta=0.0, sliding_window=0,
                        tied=True, qkv_bias=True),
        ),
    ]


# ---- reference ---------------------------------------------------------------------------


def resolve(value, n: int, n_head: int) -> int:
    if value == "last":
        return n - 1
    if value == "mid":
        return n // 2
    if value == "H-1":
        return n_head - 1
    return int(value)


@torch.no_grad()
def greedy(model, ids: list[int], steps: int, use_cache: bool):
    out_ids, margins = [], []
    seq = torch.tensor([ids])
    if not use_cache:
        for _ in range(steps):
            logits = model(seq, use_cache=False).logits[0, -1]
            top2 = torch.topk(logits, 2).values
            nxt = int(torch.argmax(logits))
            out_ids.append(nxt)
            margins.append(f64(top2[0] - top2[1]))
            seq = torch.cat([seq, torch.tensor([[nxt]])], dim=1)
        return out_ids, margins
    # transformers 5.2x renamed past_key_values to cache (the old name warns).
    cache_arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    out = model(seq, use_cache=True)
    for _ in range(steps):
        nxt = int(torch.argmax(out.logits[0, -1]))
        out_ids.append(nxt)
        cache = getattr(out, "cache", None) or out.past_key_values
        out = model(torch.tensor([[nxt]]), use_cache=True, **{cache_arg: cache})
    return out_ids, margins


def hf_config_facts(model) -> dict:
    c = model.config
    gpt2 = c.model_type == "gpt2"
    if gpt2:
        return dict(model_type="gpt2", n_layer=c.n_layer, n_head=c.n_head, n_kv_head=c.n_head,
                    head_dim=c.n_embd // c.n_head, d_model=c.n_embd, d_ff=c.n_inner or 4 * c.n_embd,
                    vocab=c.vocab_size, max_context=c.n_positions, norm_eps=c.layer_norm_epsilon,
                    tied=bool(c.tie_word_embeddings), qkv_bias=True, sliding_window=0,
                    rope_scaling="none", rope_factor=1.0, rope_theta=0.0)
    rope = dict(getattr(c, "rope_parameters", None) or {})
    rope_type = rope.get("rope_type", "default")
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    # What the eager attention of *this* model really uses (mistral: config.sliding_window;
    # qwen2: only on layers whose layer_types entry is "sliding_attention").
    window = 0
    if c.model_type == "mistral":
        window = c.sliding_window or 0
    elif c.model_type == "qwen2":
        assert all(t == "full_attention" for t in c.layer_types)
    return dict(
        model_type=c.model_type, n_layer=c.num_hidden_layers, n_head=c.num_attention_heads,
        n_kv_head=c.num_key_value_heads, head_dim=head_dim, d_model=c.hidden_size,
        d_ff=c.intermediate_size, vocab=c.vocab_size, max_context=c.max_position_embeddings,
        norm_eps=c.rms_norm_eps, tied=bool(c.tie_word_embeddings),
        qkv_bias=bool(c.model_type == "qwen2" or getattr(c, "attention_bias", False)),
        sliding_window=window,
        rope_scaling={"default": "none"}.get(rope_type, rope_type),
        rope_factor=float(rope.get("factor", 1.0)), rope_theta=float(rope["rope_theta"]))


@torch.no_grad()
def reference_for(spec: dict, directory: Path, tokenizer) -> dict:
    model = AutoModelForCausalLM.from_pretrained(str(directory), dtype=torch.float32,
                                                 attn_implementation="eager")
    model.eval()
    facts = hf_config_facts(model)
    for key, value in spec["expect"].items():
        assert facts[key] == value, (spec["name"], key, facts[key], value)
    n_head = facts["n_head"]

    enc = tokenizer(PROMPT)
    ids = list(enc["input_ids"])
    assert (ids[0] == 1) == spec["bos"], (spec["name"], ids[:3])
    n = len(ids)
    out = model(torch.tensor([ids]), output_attentions=True, use_cache=False)
    logits = out.logits[0, -1]
    attentions = out.attentions  # per layer [1, H, n, n]
    assert len(attentions) == facts["n_layer"]

    # The causal / sliding-window mask really is what eager attention applied.
    window = facts["sliding_window"]
    worst_masked = 0.0
    for layer in attentions:
        p = layer[0]
        for i in range(n):
            for j in range(n):
                if j > i or (window and i - j >= window):
                    worst_masked = max(worst_masked, float(p[:, i, j].abs().max()))
    assert worst_masked == 0.0, worst_masked

    triples = []
    for layer, head, query in TRIPLES:
        layer = resolve(layer, n, n_head)
        head = resolve(head, n, n_head)
        query = resolve(query, n, n_head)
        probs = attentions[layer][0, head, query, : query + 1]
        triples.append({"layer": layer, "head": head, "query": query,
                        "probs": [f64(x) for x in probs.tolist()]})

    # Attention is far from uniform (so RoPE / mask errors would show): the mean over all
    # layers, heads and query rows >= 8 of the row's largest probability.
    peak = float(torch.stack([a[0, :, 8:].max(dim=-1).values.mean() for a in attentions]).mean())

    greedy_ids, margins = greedy(model, ids, GREEDY_STEPS, use_cache=False)
    cached_ids, _ = greedy(model, ids, GREEDY_STEPS, use_cache=True)
    assert cached_ids == greedy_ids, (spec["name"], cached_ids, greedy_ids)

    extra = {}
    if window:
        # Evidence that the window matters at this length: the same weights without it.
        unwindowed = AutoModelForCausalLM.from_pretrained(str(directory), dtype=torch.float32,
                                                          attn_implementation="eager", sliding_window=None)
        diff = (unwindowed(torch.tensor([ids]), use_cache=False).logits[0, -1] - logits).abs().max()
        extra["last_logits_max_abs_change_without_window"] = f64(diff)
        assert diff > 1e-2, diff

    return {
        "config": facts,
        "text": PROMPT,
        "n_tokens": n,
        "token_ids": ids,
        "tokens": tokenizer.convert_ids_to_tokens(ids),
        "last_logits": [f64(x) for x in logits.tolist()],
        "attention": triples,
        "attention_mean_row_max": f64(peak),
        "greedy8": greedy_ids,
        "greedy8_margins": margins,
        "greedy8_matches_kv_cache_loop": True,
        **extra,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()

    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    cmd = "python " + " ".join(shlex.quote(a) for a in
                               [str(Path(sys.argv[0]).resolve().relative_to(REPO_ROOT))
                                if Path(sys.argv[0]).resolve().is_relative_to(REPO_ROOT) else sys.argv[0]]
                               + sys.argv[1:])
    meta_common = {
        "command": cmd,
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "tokenizers": pkg_version("tokenizers"),
            "safetensors": pkg_version("safetensors"),
            "numpy": np.__version__,
        },
        "seed_rule": f"model i uses the first seed SEED + 100*i + k (SEED = {SEED}, k = 0, 1, ...) whose greedy8 "
                     f"has every margin >= {MIN_MARGIN} and >= {MIN_DISTINCT} distinct ids",
        "conventions": "eager attention, fp32, CPU, output_attentions=True; attention rows are P[layer, head, query, "
                       "0..query] (masked entries included as 0); last_logits = logits of the last prompt "
                       "position, full vocabulary; greedy8 = 8 argmax steps without EOS stop (no KV cache, "
                       "cross-checked with a KV-cache loop); floats are float32 widened to float64",
    }

    args.out.mkdir(parents=True, exist_ok=True)
    for index, spec in enumerate(model_specs()):
        directory = args.out / spec["name"]
        if directory.exists():
            shutil.rmtree(directory)
        directory.mkdir(parents=True)

        tokenizer = save_tokenizer(train_tokenizer(spec["bos"]), directory)
        # The first seed (of SEED + 100·index, +1, ...) whose greedy continuation is not
        # degenerate and has no near-tie, so a correct runtime reproduces it robustly.
        for attempt in range(MAX_SEED_ATTEMPTS):
            seed = SEED + 100 * index + attempt
            torch.manual_seed(seed)
            spec["config"]._attn_implementation = "eager"
            model = spec["cls"](spec["config"])
            reinit_(model, gpt2=spec["cls"] is GPT2LMHeadModel)
            model.eval()
            for old in directory.glob("model*.safetensors*"):
                old.unlink()
            save_model(model, directory, spec["dtype"], spec["shard"])
            if spec["legacy"]:
                legacy_rope_config(directory)
            if spec["shard"]:
                assert (directory / "model.safetensors.index.json").exists(), "sharding produced no index"
            ref = reference_for(spec, directory, tokenizer)
            if min(ref["greedy8_margins"]) >= MIN_MARGIN and len(set(ref["greedy8"])) >= MIN_DISTINCT:
                break
        else:
            raise SystemExit(f"{spec['name']}: no seed in {MAX_SEED_ATTEMPTS} attempts gave a clear greedy path")
        ref["meta"] = {
            **meta_common,
            "model": spec["name"],
            "seed": seed,
            "class": spec["cls"].__name__,
            "stored_dtype": str(spec["dtype"]).replace("torch.", ""),
            "sharded": bool(spec["shard"]),
            "legacy_rope_config": spec["legacy"],
            "files": sorted(p.name for p in directory.iterdir()),
        }
        (directory / "reference.json").write_text(json.dumps(ref, indent=1) + "\n")
        size = sum(p.stat().st_size for p in directory.iterdir())
        print(f"{spec['name']}: {ref['n_tokens']} tokens, greedy {ref['greedy8']}, "
              f"min margin {min(ref['greedy8_margins']):.3f}, mean row max {ref['attention_mean_row_max']:.3f}, "
              f"{size / 1024:.0f} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
