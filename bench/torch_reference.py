#!/usr/bin/env python3
"""The peer's numbers for `attnscope bench gpu`, measured on the same GPU (issue 3).

Two sections, printed as a table and then one JSON object on the last line whose keys line up
with `attnscope bench gpu --json`, so one run can be compared side by side:

  attention  PyTorch scaled_dot_product_attention restricted to the flash backend, causal, batch 1,
             d_model 2048 (head dim 64 → 32 heads, 128 → 16 heads, MHA), bf16, at the same lengths
             (4k / 16k / 50k by default). Same FLOP count as attnscope: 2·N²·d·heads (causal
             forward, QKᵀ and PV). Timed with CUDA events after warm-up; median of the repeats.
  eager      Hugging Face transformers with attn_implementation="eager" and
             output_attentions=True (the only way it returns attention probabilities): one prefill
             at growing lengths until it runs out of GPU memory, tokens/s and peak memory per
             length, and the first length that failed.

Example (PyTorch and transformers installed on the GPU machine):
    python3 bench/torch_reference.py --json-out torch.json
    ./build/attnscope bench gpu --json > attnscope.json

torch and transformers are imported only when a section runs, so --help works without them.
"""

import argparse
import json
import statistics
import sys
import time


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--attention", type=int, nargs="+", default=[4096, 16384, 50000],
                   help="attention lengths (tokens), as `bench gpu --attention`")
    p.add_argument("--head-dims", type=int, nargs="+", default=[64, 128])
    p.add_argument("--d-model", type=int, default=2048, help="heads = d_model / head_dim (attnscope uses 2048)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--model", default="HuggingFaceTB/SmolLM2-135M-Instruct",
                   help="transformers model for the eager section: a local directory, or a name in the local "
                        "HF cache (nothing is downloaded unless --allow-download)")
    p.add_argument("--gguf-file", default=None,
                   help="load the model from this GGUF file (transformers' gguf_file=, dequantised), e.g. the "
                        "default model SmolLM2-135M-Instruct.Q4_1.gguf; --model is then its directory")
    p.add_argument("--allow-download", action="store_true", help="let transformers fetch --model from the hub")
    p.add_argument("--eager-start", type=int, default=1024, help="first eager prefill length")
    p.add_argument("--eager-max", type=int, default=65536, help="stop doubling here even without OOM")
    p.add_argument("--skip-attention", action="store_true")
    p.add_argument("--skip-eager", action="store_true")
    p.add_argument("--json", action="store_true", help="print only the JSON line")
    p.add_argument("--json-out", default=None, help="also write the JSON to this file")
    return p.parse_args(argv)


def cuda_event_ms(torch, fn, warmup, repeats):
    start = torch.cuda.Event(enable_timing=True)
    stop = torch.cuda.Event(enable_timing=True)
    times = []
    for r in range(warmup + repeats):
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        if r >= warmup:
            times.append(start.elapsed_time(stop))
    return statistics.median(times)


def bench_sdpa(args):
    import torch
    import torch.nn.functional as F

    try:  # torch ≥ 2.3
        from torch.nn.attention import SDPBackend, sdpa_kernel

        def flash_only():
            return sdpa_kernel([SDPBackend.FLASH_ATTENTION])
    except ImportError:  # older torch
        def flash_only():
            return torch.backends.cuda.sdp_kernel(enable_flash=True, enable_math=False, enable_mem_efficient=False)

    rows = []
    for hd in args.head_dims:
        heads = args.d_model // hd
        for n in args.attention:
            row = {"head_dim": hd, "heads": heads, "tokens": n, "impl": "torch_sdpa_flash"}
            try:
                q, k, v = (torch.randn(1, heads, n, hd, device="cuda", dtype=torch.bfloat16) for _ in range(3))
                with flash_only():
                    ms = cuda_event_ms(torch, lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True),
                                       args.warmup, args.repeats)
                flops = 2.0 * n * n * hd * heads
                row.update({"ms": ms, "tflops": flops / (ms * 1e-3) / 1e12})
                del q, k, v
            except (RuntimeError, torch.cuda.OutOfMemoryError) as e:  # OOM or no flash kernel for this shape
                row.update({"ms": None, "tflops": None, "error": str(e).splitlines()[0]})
            torch.cuda.empty_cache()
            rows.append(row)
    return rows


def bench_eager(args):
    import torch
    from transformers import AutoModelForCausalLM

    kwargs = {"attn_implementation": "eager", "torch_dtype": torch.float32}
    if args.gguf_file:
        kwargs["gguf_file"] = args.gguf_file
    if not args.allow_download:
        kwargs["local_files_only"] = True
    model = AutoModelForCausalLM.from_pretrained(args.model, **kwargs).to("cuda").eval()
    vocab = model.config.vocab_size
    rows, first_oom = [], None
    n = args.eager_start
    while n <= args.eager_max:
        ids = torch.randint(0, vocab, (1, n), device="cuda")
        torch.cuda.reset_peak_memory_stats()
        try:
            with torch.no_grad():
                def run():
                    out = model(ids, output_attentions=True, use_cache=False)
                    return out.attentions
                run()  # warm-up at this length
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                attentions = run()
                torch.cuda.synchronize()
                seconds = time.perf_counter() - t0
            rows.append({"tokens": n, "tokens_per_s": n / seconds,
                         "peak_gpu_bytes": torch.cuda.max_memory_allocated(),
                         "attention_bytes": sum(a.numel() * a.element_size() for a in attentions)})
            del attentions
        except torch.cuda.OutOfMemoryError:
            first_oom = n
            break
        finally:
            torch.cuda.empty_cache()
        n *= 2
    return {"model": args.model, "gguf_file": args.gguf_file, "prefill": rows, "first_oom_tokens": first_oom}


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    out = {}
    try:
        import torch
    except ImportError:
        print("torch_reference.py: PyTorch is not installed (pip install torch transformers)", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print("torch_reference.py: no CUDA device visible to PyTorch", file=sys.stderr)
        return 2
    out["device"] = torch.cuda.get_device_name()
    out["torch"] = torch.__version__
    if not args.skip_attention:
        out["attention"] = bench_sdpa(args)
    if not args.skip_eager:
        out["eager_output_attentions"] = bench_eager(args)

    if not args.json:
        print(f"PyTorch {out['torch']} on {out['device']}\n")
        if "attention" in out:
            print("SDPA (flash backend), causal, batch 1")
            print(f"{'head dim':>8} {'heads':>6} {'tokens':>8} {'ms':>10} {'TFLOP/s':>9}")
            for r in out["attention"]:
                ms = "OOM/err" if r["ms"] is None else f"{r['ms']:.3f}"
                tf = "" if r["tflops"] is None else f"{r['tflops']:.1f}"
                print(f"{r['head_dim']:>8} {r['heads']:>6} {r['tokens']:>8} {ms:>10} {tf:>9}")
            print()
        if "eager_output_attentions" in out:
            e = out["eager_output_attentions"]
            print(f"transformers eager, output_attentions=True: {e['model']}")
            print(f"{'tokens':>8} {'tok/s':>12} {'peak GPU':>12} {'attentions':>12}")
            for r in e["prefill"]:
                print(f"{r['tokens']:>8} {r['tokens_per_s']:>12.1f} {r['peak_gpu_bytes'] / 2**30:>10.2f} GiB "
                      f"{r['attention_bytes'] / 2**30:>10.2f} GiB")
            if e["first_oom_tokens"]:
                print(f"out of GPU memory at {e['first_oom_tokens']} tokens")
            print()
    line = json.dumps(out)
    print(line)
    if args.json_out:
        with open(args.json_out, "w") as f:
            f.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
