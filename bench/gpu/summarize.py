#!/usr/bin/env python3
"""Reads the part logs run_all.sh left in a directory and prints the benchmark's summary, the
RESULT lines RESULTS.md ends each entry with, and a markdown table to start that entry from.

Each part's log ends with one machine-readable line: engine_bench's `BENCH k=v ...`,
hf_baseline.py's `HF k=v ...`, service_bench.sh's `SERVICE k=v ...`. Values with spaces are
double-quoted (shlex rules).

usage: summarize.py LOG_DIR [--card NAME] [--since EPOCH_SECONDS]
"""
import argparse
import math
import os
import shlex
import time

PARTS = {  # part -> (model, kind)
    "llama-engine": ("llama-1b", "BENCH"),
    "llama-eager": ("llama-1b", "BENCH"),
    "llama-hf": ("llama-1b", "HF"),
    "moe-engine": ("powermoe-3b", "BENCH"),
    "moe-hf": ("powermoe-3b", "HF"),
    "service": ("llama-1b", "SERVICE"),
}


def last_record(path, tag):
    """The key=value dict of the last line of `path` that starts with `tag` (None if none)."""
    if not os.path.exists(path):
        return None
    found = None
    with open(path, errors="replace") as f:
        for line in f:
            if line.startswith(tag + " "):
                found = line
    if found is None:
        return None
    out = {}
    for item in shlex.split(found)[1:]:
        k, _, v = item.partition("=")
        try:
            out[k] = float(v) if any(c in v for c in ".eE") or v.lstrip("-").isdigit() else v
        except ValueError:
            out[k] = v
    return out


def fmt(x, digits=1):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.{digits}f}"


def ratio(a, b):
    return a / b if a and b else float("nan")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("log_dir")
    p.add_argument("--card", default=None, help="the card's name as nvidia-smi gives it")
    p.add_argument("--since", type=float, default=0.0,
                   help="logs older than this (epoch seconds) are marked as from an earlier run")
    args = p.parse_args()

    rec = {}
    for part, (_, kind) in PARTS.items():
        path = os.path.join(args.log_dir, f"{part}.log")
        r = last_record(path, kind)
        if r is not None and kind == "BENCH" and not r.get("copy_gb_s"):
            # No device copy rate (a CPU run): there is no floor, rather than a floor of 0.
            for k in ("decode_floor_ms", "decode_floor_fraction", "copy_gb_s"):
                r[k] = None
        if r is not None:
            r["_mtime"] = os.path.getmtime(path)
            rec[part] = r
    card = args.card
    if not card:
        for part in ("llama-engine", "moe-engine"):
            if part in rec and rec[part].get("card"):
                card = rec[part]["card"]
                break
    card = card or "unknown"

    print(f"=== summary ({card})")
    for part, r in rec.items():
        if args.since and r["_mtime"] < args.since:
            print(f"  note: {part} is from an earlier run ("
                  f"{time.strftime('%H:%M:%S', time.localtime(r['_mtime']))})")
    lines = []
    md = ["| model | figure | value | against | ratio |", "|---|---|---:|---|---:|"]
    for model, engine, eager, hf in (("llama-1b", "llama-engine", "llama-eager", "llama-hf"),
                                     ("powermoe-3b", "moe-engine", None, "moe-hf")):
        e, h = rec.get(engine), rec.get(hf)
        if e is None and h is None:
            continue
        print(f"{model}:")
        out = e.get("output_tok_s") if e else None
        hf_out = h.get("output_tok_s") if h else None
        if e:
            print(f"  engine: {fmt(e.get('requests_per_s'), 2)} requests/s, "
                  f"{fmt(e.get('total_tok_s'))} total tokens/s, {fmt(out)} output tokens/s "
                  f"({int(e.get('num_prompts', 0))} prompts x {int(e.get('input_len', 0))} in + "
                  f"{int(e.get('output_len', 0))} out, max_num_seqs "
                  f"{int(e.get('max_num_seqs', 0))}, {fmt(e.get('elapsed_s'), 2)} s, "
                  f"{int(e.get('preemptions', 0))} preemptions)")
            print(f"  load: weights {fmt(e.get('load_weights_s'), 2)} s = "
                  f"{fmt(e.get('weights_load_gb_s'), 2)} GB/s of checkpoint (target >= 1; page "
                  f"cache read {fmt(e.get('page_cache_read_gb_s'), 2)} GB/s); Engine::Create "
                  f"{fmt(e.get('load_s'), 2)} s in all (tokenizer "
                  f"{fmt(e.get('tokenizer_load_s'), 2)} s, step buffers + GEMM plans + KV cache "
                  f"{fmt(e.get('load_prepare_s'), 2)} s) = {fmt(e.get('load_gb_s'), 2)} GB/s")
            print(f"  decode at full batch: {int(e.get('decode_steps', 0))} steps, median "
                  f"{fmt(e.get('decode_step_median_ms'), 3)} ms vs floor "
                  f"{fmt(e.get('decode_floor_ms'), 3)} ms (copy {fmt(e.get('copy_gb_s'))} GB/s) "
                  f"-> floor/measured {fmt(e.get('decode_floor_fraction'), 3)}")
            against = (f"HF generate, batch {int(h.get('batch_size', 0))}: {fmt(hf_out)}" if h
                       else "HF generate: not run")
            md.append(f"| {model} | engine output tok/s | {fmt(out)} | {against} | "
                      f"{fmt(ratio(out, hf_out), 2)}{'x' if h else ''} |")
            md.append(f"| {model} | requests/s, total tok/s | {fmt(e.get('requests_per_s'), 2)}, "
                      f"{fmt(e.get('total_tok_s'))} | | |")
            md.append(f"| {model} | decode step at batch {int(e.get('max_num_seqs', 0))} (median)"
                      f" | {fmt(e.get('decode_step_median_ms'), 3)} ms | bandwidth floor "
                      f"{fmt(e.get('decode_floor_ms'), 3)} ms | "
                      f"{fmt(e.get('decode_floor_fraction'), 3)} |")
            md.append(f"| {model} | weight load (page cache) | "
                      f"{fmt(e.get('weights_load_gb_s'), 2)} GB/s |"
                      f" page-cache read {fmt(e.get('page_cache_read_gb_s'), 2)} GB/s | "
                      f"{fmt(ratio(e.get('weights_load_gb_s'), e.get('page_cache_read_gb_s')), 2)}"
                      f" |")
            md.append(f"| {model} | Engine::Create in all (tokenizer, weights, step buffers, "
                      f"GEMM plans, KV cache) | {fmt(e.get('load_s'), 2)} s | | |")
        if h:
            print(f"  HF generate: {fmt(hf_out)} output tokens/s (batch "
                  f"{int(h.get('batch_size', 0))}, {int(h.get('batches', 0))} batch(es) after "
                  f"a {h.get('warmup_tokens', '?')}-token warm-up batch, "
                  f"{fmt(h.get('step_ms'), 2)} ms/step; torch {h.get('torch')}, "
                  f"transformers {h.get('transformers')}"
                  f"{', STOPPED EARLY' if h.get('stopped_early') == 'True' else ''})")
        if e and h:
            print(f"  engine / HF output tokens/s: {fmt(ratio(out, hf_out), 2)}x")
        if eager and rec.get(eager):
            x = rec[eager]
            print(f"  --enforce-eager: {fmt(x.get('output_tok_s'))} output tokens/s, decode median "
                  f"{fmt(x.get('decode_step_median_ms'), 3)} ms (graphs / eager: "
                  f"{fmt(ratio(out, x.get('output_tok_s')), 2)}x)")
            md.append(f"| {model} | output tok/s with CUDA graphs | {fmt(out)} | --enforce-eager: "
                      f"{fmt(x.get('output_tok_s'))} | "
                      f"{fmt(ratio(out, x.get('output_tok_s')), 2)}x |")
        if model == "llama-1b" and rec.get("service"):
            s = rec["service"]
            print(f"  service path (coordinator + 1 worker, gRPC, JSONL): {fmt(s.get('gen_tok_s'))}"
                  f" generated tokens/s over {fmt(s.get('elapsed_s'), 2)} s (job wall "
                  f"{fmt(s.get('job_wall_s'), 2)} s) -> {fmt(ratio(s.get('gen_tok_s'), out), 3)} of"
                  f" the engine-only figure")
            md.append(f"| {model} | service path generated tok/s | {fmt(s.get('gen_tok_s'))} | "
                      f"engine only: {fmt(out)} | {fmt(ratio(s.get('gen_tok_s'), out), 3)} |")
        if e:
            frac = e.get("decode_floor_fraction")
            lines.append(f'RESULT model={model} card="{card}" output_tok_s={fmt(out)} '
                         f"hf_output_tok_s={fmt(hf_out)} speedup={fmt(ratio(out, hf_out), 3)} "
                         f"decode_floor_fraction={fmt(frac, 3)}")
    print()
    print("\n".join(md))
    print()
    for line in lines:
        print(line)


if __name__ == "__main__":
    main()
