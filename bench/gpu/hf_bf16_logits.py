#!/usr/bin/env python3
"""How close transformers itself gets to the fixtures' fp32 reference logits in bfloat16.

`dpinfer check-logits --dtype bfloat16` holds the engine's bf16 path to a relative error of 2e-2
against the fp32 logits transformers wrote into each fixture's reference.safetensors. This runs
transformers on the same weights and inputs in bfloat16 (and float32, as a check of the harness)
and prints the same figure per sequence: max |logit - reference| / max |reference|, and top-1
agreement. What bf16 arithmetic alone costs on these models, measured the same way.

usage: hf_bf16_logits.py FIXTURE_DIR... [--device cuda]
"""
import argparse
import json
import os
import struct
import sys

import torch
from transformers import AutoModelForCausalLM


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        base = 8 + n
        out = {}
        for name, meta in header.items():
            if name == "__metadata__":
                continue
            begin, end = meta["data_offsets"]
            f.seek(base + begin)
            raw = f.read(end - begin)
            dtype = {"F32": torch.float32, "I32": torch.int32, "I64": torch.int64}[meta["dtype"]]
            out[name] = torch.frombuffer(bytearray(raw), dtype=dtype).reshape(meta["shape"])
        return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("fixtures", nargs="+")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    worst = {}
    for fx in args.fixtures:
        ref = read_safetensors(os.path.join(fx, "reference.safetensors"))
        ids = ref["input_ids"].long().to(args.device)
        want = ref["logits"].float()
        name = os.path.basename(os.path.normpath(fx))
        for dtype in (torch.float32, torch.bfloat16):
            model = AutoModelForCausalLM.from_pretrained(fx, dtype=dtype).to(args.device).eval()
            with torch.no_grad():
                got = model(ids).logits.float().cpu()
            rels, top1 = [], 0
            for s in range(ids.shape[0]):
                err = (got[s] - want[s]).abs().max().item()
                scale = want[s].abs().max().item()
                rels.append(err / scale if scale > 0 else err)
                top1 += int((got[s].argmax(-1) == want[s].argmax(-1)).sum().item())
            label = str(dtype).replace("torch.", "")
            print(f"HF {name} {label}: relative per sequence "
                  f"{' '.join(f'{r:.3e}' for r in rels)}; worst {max(rels):.3e}; "
                  f"top-1 {top1}/{ids.numel()}")
            worst[(name, label)] = max(rels)
            del model
    for (name, label), w in worst.items():
        print(f"HFLOGITS fixture={name} dtype={label} worst_relative={w:.4e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
