"""Generate text with an exported ``.tflite`` file: the LiteRT interpreter plus the tokenizer.

No TensorFlow and no tflm model code: the loop below is all a device needs. Byte-level
BPE tokenizers are read from ``tokenizer/vocab.json`` + ``merges.txt`` with HF
``tokenizers`` (configured as tflm trains them); other kinds fall back to
``tflm.text.load_tokenizer``.

    python export/run_tflite.py --model=OUT/model_dynamic_int8.tflite \\
        --tokenizer=OUT/tokenizer --prompt="The" --max_new_tokens=32

Prints one JSON object per prompt: ``{"prompt", "text", "token_ids", "ms_per_token"}``.
Greedy by default; ``--temperature`` > 0 samples (``--top_k``, ``--seed``).
"""

import argparse
import json
import os
import time

import numpy as np
from ai_edge_litert.interpreter import Interpreter


class BPE:
    """tflm's byte-level BPE from its saved assets (``<|endoftext|>`` is eos)."""

    EOS = "<|endoftext|>"

    def __init__(self, directory):
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers

        with open(os.path.join(directory, "vocab.json"), encoding="utf-8") as f:
            vocab = json.load(f)
        with open(os.path.join(directory, "merges.txt"), encoding="utf-8") as f:
            merges = [tuple(line.split(" ")) for line in f.read().splitlines()
                      if line and not line.startswith("#version")]
        self._tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
        self._tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False,
                                                           use_regex=True)
        self._tok.decoder = decoders.ByteLevel()
        self._tok.add_special_tokens([self.EOS])
        self.eos_id = vocab[self.EOS]
        self.start_id = self.eos_id

    def encode(self, text):
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids):
        return self._tok.decode(list(ids), skip_special_tokens=False)


class TflmTokenizer:
    """Any other tflm tokenizer kind, through ``tflm.text``."""

    def __init__(self, directory):
        from tflm.text import load_tokenizer

        self._tok = load_tokenizer(directory)
        self.eos_id = self._tok.eos_id
        starts = [self._tok.eos_id, self._tok.cls_id, self._tok.pad_id, 0]
        self.start_id = next(i for i in starts if i is not None)

    def encode(self, text):
        return self._tok.encode([text])[0]

    def decode(self, ids):
        return self._tok.decode(list(ids))


def load_tokenizer(directory):
    with open(os.path.join(directory, "tokenizer.json"), encoding="utf-8") as f:
        kind = json.load(f)["kind"]
    return BPE(directory) if kind == "bpe" else TflmTokenizer(directory)


def pick(logits, temperature, top_k, rng):
    """Greedy when temperature <= 0, else a (top-k) sample of softmax(logits / T)."""
    if temperature <= 0:
        return int(np.argmax(logits))
    logits = logits.astype(np.float64) / temperature
    if top_k > 0:
        logits[logits < np.sort(logits)[-top_k]] = -np.inf
    probs = np.exp(logits - logits.max())
    return int(rng.choice(len(probs), p=probs / probs.sum()))


def generate(model_path, tokenizer, prompt, max_new_tokens=32, temperature=0.0, top_k=0,
             seed=0, num_threads=None):
    """Prefill the prompt, then one ``decode`` call per new token; the KV cache (one
    tensor per layer) goes in and out of every call."""
    interpreter = Interpreter(model_path=model_path, num_threads=num_threads)
    prefill = interpreter.get_signature_runner("prefill")
    decode = interpreter.get_signature_runner("decode")
    window = int(prefill.get_input_details()["token_ids"]["shape"][1])
    max_new_tokens = min(max_new_tokens, window - 1)
    # An empty prompt starts a new document (the start token), as tflm's generate does.
    ids = (tokenizer.encode(prompt) or [tokenizer.start_id])[-(window - max_new_tokens):]
    tokens = np.zeros((1, window), np.int32)
    tokens[0, :len(ids)] = ids
    caches = prefill(token_ids=tokens, length=np.int32(len(ids)))  # cache_0 ... cache_{L-1}
    logits = caches.pop("logits")[0]
    rng = np.random.default_rng(seed)
    new, start = [], time.perf_counter()
    for step in range(max_new_tokens):
        token = pick(logits, temperature, top_k, rng)
        new.append(token)
        if token == tokenizer.eos_id or len(ids) + step >= window:
            break
        caches = decode(token_id=np.array([[token]], np.int32),
                        index=np.int32(len(ids) + step), **caches)
        logits = caches.pop("logits")[0]
    elapsed = time.perf_counter() - start
    text_ids = [t for t in new if t != tokenizer.eos_id]
    return {"prompt": prompt, "text": tokenizer.decode(text_ids), "token_ids": new,
            "ms_per_token": 1e3 * elapsed / max(len(new), 1)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="a .tflite file from tflm export")
    parser.add_argument("--tokenizer", help="tokenizer dir (default: next to --model)")
    parser.add_argument("--prompt", action="append", default=None)
    parser.add_argument("--max_new_tokens", type=int, default=32)
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--top_k", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    directory = args.tokenizer or os.path.join(os.path.dirname(args.model), "tokenizer")
    tokenizer = load_tokenizer(directory)
    for prompt in args.prompt or ["The"]:
        print(json.dumps(generate(args.model, tokenizer, prompt, args.max_new_tokens,
                                  args.temperature, args.top_k, args.seed),
                         ensure_ascii=False))


if __name__ == "__main__":
    main()
