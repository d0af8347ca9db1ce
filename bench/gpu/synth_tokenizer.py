#!/usr/bin/env python3
"""Synthesizes a byte-level BPE tokenizer.json of an exact vocabulary size (standard library only).

The benchmark models are random-weight checkpoints made on a machine without internet, so their
real tokenizers cannot be downloaded; the engine still loads tokenizer.json and detokenizes every
generated id. This writes one that covers ids [0, vocab_size) exactly: the 256 byte tokens of
GPT-2's byte-to-character alphabet, then synthetic merges (each new token the concatenation of two
existing tokens, unique, listed in the order they were made) up to the size, with the special
tokens (added_tokens) at the ids the model's config names. Two layouts, both as HF `tokenizers`
serializes them: "llama3" (Split with Llama 3's regex + ByteLevel, a BOS template) and "gpt2"
(ByteLevel with GPT-2's regex, no template; StarCoder/Granite style).

Deterministic: the same arguments give the same file.

usage: synth_tokenizer.py --vocab-size N --out DIR_OR_FILE [--style llama3|gpt2]
           [--special ID=TEXT ...] [--bos-id ID] [--seed S]
"""
import argparse
import json
import os
import random

# Llama 3's pre-tokenizer regex (tokenizer.json of meta-llama/Llama-3.2-1B).
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def byte_alphabet():
    """GPT-2's bytes_to_unicode(): the printable character that stands for each byte."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) +
                 list(range(0xAE, 0xFF + 1)))
    chars, n = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + n)
            n += 1
    return [chars[b] for b in range(256)]


def _make_merges(num_merges, seed, max_bytes, forbidden):
    """Returns (tokens, merges): the 256 byte tokens followed by `num_merges` merged tokens.

    Each merge joins two existing tokens into a new one of at most `max_bytes` bytes. Pairs are
    drawn with a bias towards early tokens, letters and a leading space ("Ġ"), so that the
    vocabulary looks vaguely like a trained one (short frequent pieces first) and real text
    encodes to fewer ids than bytes.
    """
    alphabet = byte_alphabet()
    tokens = list(alphabet)
    nbytes = [1] * 256
    seen = set(tokens) | set(forbidden)
    merges = []
    rng = random.Random(seed)
    letters = [alphabet[b] for b in list(range(ord("a"), ord("z") + 1)) +
               list(range(ord("A"), ord("Z") + 1))]
    space = alphabet[ord(" ")]
    favoured = [space] * 4 + letters * 2 + [alphabet[ord(c)] for c in "0123456789.,-_'\n"]
    misses = 0
    while len(merges) < num_merges:
        n = len(tokens)
        # Left: an early token more often than a late one (squared uniform), or a favoured byte.
        if rng.random() < 0.3:
            left = rng.choice(favoured)
            lbytes = 1
        else:
            i = int(n * rng.random() ** 2)
            left, lbytes = tokens[i], nbytes[i]
        if rng.random() < 0.6:
            right = rng.choice(letters)
            rbytes = 1
        else:
            j = int(n * rng.random() ** 3)
            right, rbytes = tokens[j], nbytes[j]
        merged = left + right
        if lbytes + rbytes > max_bytes or merged in seen:
            misses += 1
            if misses > 1000 * (num_merges + 1):
                raise RuntimeError(
                    f"cannot make {num_merges} unique merges of <= {max_bytes} bytes")
            continue
        seen.add(merged)
        tokens.append(merged)
        nbytes.append(lbytes + rbytes)
        merges.append([left, right])
    return tokens, merges


def synthesize(vocab_size, specials, style="llama3", bos_id=None, seed=0, max_bytes=16):
    """Returns the tokenizer.json dict.

    vocab_size: ids [0, vocab_size) are all covered.
    specials: {id: content} added tokens (special, not normalized), also in the model's vocab at
        those ids; the BPE tokens take the other ids in order.
    style: "llama3" or "gpt2" (see the module docstring).
    bos_id: with style "llama3", the template's BOS (default: the lowest special id).
    """
    specials = {int(k): v for k, v in specials.items()}
    for i in specials:
        if not 0 <= i < vocab_size:
            raise ValueError(f"special token id {i} outside [0, {vocab_size})")
    if len(set(specials.values())) != len(specials):
        raise ValueError("special token contents must be unique")
    num_bpe = vocab_size - len(specials)
    if num_bpe < 256:
        raise ValueError(f"vocab_size {vocab_size} leaves fewer than 256 ids for the byte tokens")
    tokens, merges = _make_merges(num_bpe - 256, seed, max_bytes, set(specials.values()))
    free_ids = (i for i in range(vocab_size) if i not in specials)
    vocab = {tok: next(free_ids) for tok in tokens}
    # The special tokens are in the model's vocab too, at their ids. HF `tokenizers` gives an added
    # token that the model lacks the id len(model vocab) + k, whatever id the file names, which
    # would collide with a BPE token unless every special came after all of them; with the
    # contents in the vocab it takes the model's id (as StarCoder's <|endoftext|> at 0 does).
    vocab.update({content: i for i, content in specials.items()})
    vocab = dict(sorted(vocab.items(), key=lambda kv: kv[1]))
    assert len(vocab) == vocab_size and sorted(vocab.values()) == list(range(vocab_size))

    added = [{"id": i, "content": c, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for i, c in sorted(specials.items())]
    model = {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
             "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
             "ignore_merges": style == "llama3", "vocab": vocab, "merges": merges}
    decoder = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
               "use_regex": True}
    if style == "llama3":
        pre_tokenizer = {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": LLAMA3_SPLIT}, "behavior": "Isolated",
             "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
             "use_regex": False}]}
        if bos_id is None:
            bos_id = min(specials) if specials else None
        if bos_id is None or bos_id not in specials:
            raise ValueError("style llama3 needs a BOS among the special tokens")
        bos = specials[bos_id]
        post_processor = {"type": "Sequence", "processors": [
            {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False,
             "use_regex": True},
            {"type": "TemplateProcessing",
             "single": [{"SpecialToken": {"id": bos, "type_id": 0}},
                        {"Sequence": {"id": "A", "type_id": 0}}],
             "pair": [{"SpecialToken": {"id": bos, "type_id": 0}},
                      {"Sequence": {"id": "A", "type_id": 0}},
                      {"SpecialToken": {"id": bos, "type_id": 1}},
                      {"Sequence": {"id": "B", "type_id": 1}}],
             "special_tokens": {bos: {"id": bos, "ids": [bos_id], "tokens": [bos]}}}]}
    elif style == "gpt2":
        pre_tokenizer = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                         "use_regex": True}
        post_processor = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                          "use_regex": True}
    else:
        raise ValueError(f"unknown style {style!r}")
    return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
            "normalizer": None, "pre_tokenizer": pre_tokenizer, "post_processor": post_processor,
            "decoder": decoder, "model": model}


def write(tokenizer, path):
    """Writes tokenizer.json (into `path` when it is a directory)."""
    if os.path.isdir(path):
        path = os.path.join(path, "tokenizer.json")
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(tokenizer, f, ensure_ascii=False)
    os.replace(tmp, path)
    return path


def write_tokenizer_config(directory, bos, eos, pad=None, model_max_length=None):
    """tokenizer_config.json so that transformers' AutoTokenizer can load the directory too."""
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": bos, "eos_token": eos,
              "clean_up_tokenization_spaces": False}
    if pad is not None:
        config["pad_token"] = pad
    if model_max_length is not None:
        config["model_max_length"] = model_max_length
    with open(os.path.join(directory, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--vocab-size", type=int, required=True)
    p.add_argument("--out", required=True, help="tokenizer.json path or a directory")
    p.add_argument("--style", choices=["llama3", "gpt2"], default="llama3")
    p.add_argument("--special", action="append", default=[], metavar="ID=TEXT",
                   help="an added special token (repeatable)")
    p.add_argument("--bos-id", type=int, help="llama3 style: the template's BOS id")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    specials = {}
    for s in args.special:
        i, _, text = s.partition("=")
        specials[int(i)] = text
    if not specials:
        specials = {args.vocab_size - 2: "<|begin_of_text|>",
                    args.vocab_size - 1: "<|end_of_text|>"}
    tok = synthesize(args.vocab_size, specials, args.style, args.bos_id, args.seed)
    path = write(tok, args.out)
    print(f"wrote {path}: {args.vocab_size} ids ({len(tok['model']['merges'])} merges, "
          f"{len(specials)} special tokens)")


if __name__ == "__main__":
    main()
