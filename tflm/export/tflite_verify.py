"""Run ``.tflite`` files with the LiteRT interpreter and compare them with the Keras model:
logits, greedy tokens, top-1 agreement, perplexity, size and latency."""

from __future__ import annotations

import os
import time

import numpy as np

from tflm.export import reference

EVAL_WINDOWS = 64


class TFLiteLM:
    """A ``.tflite`` causal LM (signatures ``logits``, ``prefill``, ``decode``), batch 1."""

    def __init__(self, path: str, num_threads: int | None = None):
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=path, num_threads=num_threads)
        self._logits = self.interpreter.get_signature_runner("logits")
        self._prefill = self.interpreter.get_signature_runner("prefill")
        self._decode = self.interpreter.get_signature_runner("decode")
        self.window = int(self._prefill.get_input_details()["token_ids"]["shape"][1])

    def logits(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """(N, S) ids and mask -> (N, S, V) float32 logits, one window at a time."""
        return np.concatenate([
            self._logits(token_ids=ids[i:i + 1].astype(np.int32),
                         padding_mask=mask[i:i + 1].astype(np.int32))["logits"]
            for i in range(len(ids))
        ])

    def prefill(self, prompt: list[int]):
        """``(logits (V,), caches)`` after the prompt (at most ``window`` ids); ``caches``
        maps ``cache_i`` to layer i's (1, 2, S, H, D) cache."""
        ids = np.zeros((1, self.window), np.int32)
        ids[0, :len(prompt)] = prompt
        out = self._prefill(token_ids=ids, length=np.int32(len(prompt)))
        return out.pop("logits")[0], out

    def decode(self, token: int, caches: dict, index: int):
        """``(logits (V,), caches)`` after writing ``token`` at slot ``index``."""
        out = self._decode(token_id=np.array([[token]], np.int32), index=np.int32(index),
                           **caches)
        return out.pop("logits")[0], out

    def greedy(self, prompt: list[int], max_new_tokens: int, eos_id: int | None) -> list[int]:
        """Greedy new tokens (stops after ``eos_id``, included)."""
        logits, cache = self.prefill(prompt)
        new = []
        for step in range(max_new_tokens):
            token = int(np.argmax(logits))
            new.append(token)
            if token == eos_id or len(prompt) + step >= self.window:
                break
            logits, cache = self.decode(token, cache, len(prompt) + step)
        return new

    def decode_latency_ms(self, prompt: list[int], steps: int = 16) -> dict:
        """Median ms of one ``prefill`` and of one ``decode`` step (after a warm-up)."""
        self.prefill(prompt)
        prefill_times, decode_times = [], []
        for _ in range(3):
            start = time.perf_counter()
            logits, cache = self.prefill(prompt)
            prefill_times.append(time.perf_counter() - start)
        index = len(prompt)
        for _ in range(min(steps, self.window - index)):
            token = int(np.argmax(logits))
            start = time.perf_counter()
            logits, cache = self.decode(token, cache, index)
            decode_times.append(time.perf_counter() - start)
            index += 1
        return {"prefill_ms": 1e3 * float(np.median(prefill_times)),
                "decode_ms_per_token": 1e3 * float(np.median(decode_times))}


def next_token_stats(logits: np.ndarray, ids: np.ndarray, mask: np.ndarray):
    """``(top1 (M,), nll (M,))`` at every position whose next token is real."""
    valid = mask[:, 1:].astype(bool)  # position t predicts token t + 1
    scores = logits[:, :-1][valid].astype(np.float64)  # (M, V)
    targets = ids[:, 1:][valid]
    scores = scores - scores.max(-1, keepdims=True)
    log_probs = scores - np.log(np.exp(scores).sum(-1, keepdims=True))
    return scores.argmax(-1), -log_probs[np.arange(len(targets)), targets]


def verify_variants(files: dict, ops: dict, model, tokenizer, eval_texts: list[str],
                    max_new_tokens: int = 8) -> dict:
    """Per variant (quantize -> path): size, ops, logits / greedy / agreement / perplexity
    against the Keras model on ``eval_texts``, and single-sequence latency."""
    window = int(model.max_sequence_length)
    ids, mask = reference.token_windows(tokenizer, eval_texts, window, EVAL_WINDOWS)
    keras_logits = reference.keras_logits(model, ids, mask)
    keras_top1, keras_nll = next_token_stats(keras_logits, ids, mask)
    keras_ppl = float(np.exp(keras_nll.mean()))
    prompts = reference.prompts_from(eval_texts)
    keep = window - max_new_tokens
    prompt_ids = [reference.prompt_ids(tokenizer, p, keep) for p in prompts]
    keras_tokens = [reference.keras_greedy(model, tokenizer, p, max_new_tokens)
                    for p in prompts]
    fp32_size = os.path.getsize(files["none"])
    report = {}
    for q, path in files.items():
        lm = TFLiteLM(path)
        logits = lm.logits(ids, mask)
        top1, nll = next_token_stats(logits, ids, mask)
        ppl = float(np.exp(nll.mean()))
        diff = float(np.max(np.abs(logits - keras_logits)[mask.astype(bool)]))
        tokens = [lm.greedy(p, max_new_tokens, tokenizer.eos_id) for p in prompt_ids]
        report[q] = {
            "file": os.path.basename(path),
            "size_bytes": os.path.getsize(path),
            "size_ratio_to_float32": os.path.getsize(path) / fp32_size,
            "ops": ops[q],
            "flex_ops": [],
            "logits_max_abs_diff": diff,
            "logits_within_1e-4": diff <= 1e-4,
            "greedy_token_identical": tokens == keras_tokens,
            "top1_agreement": float(np.mean(top1 == keras_top1)),
            "positions": int(len(top1)),
            "perplexity": ppl,
            "keras_perplexity": keras_ppl,
            "perplexity_change": ppl / keras_ppl - 1.0,
            **lm.decode_latency_ms(prompt_ids[0]),
        }
    return report
