"""What exported models are checked against: the Keras model run eagerly, token windows of
real text, and a full-recompute greedy loop (no KV cache, so it checks the cache code too).
"""

from __future__ import annotations

import numpy as np

from tflm import special_ids


def token_stream(tokenizer, texts: list[str]) -> np.ndarray:
    """The texts' token ids, each text preceded by the start token, concatenated."""
    out = []
    for ids in tokenizer.encode(list(texts)):
        out.extend(special_ids.scored_ids(tokenizer, ids))
    return np.asarray(out, np.int32)


def token_windows(tokenizer, texts: list[str], window: int, num_windows: int,
                  offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``num_windows`` consecutive (window,) slices of the token stream.

    Returns ``(token_ids, padding_mask)`` int32 (N, window); a short last window is padded
    on the right (mask 0).
    """
    stream = token_stream(tokenizer, texts)[offset:]
    rows, masks = [], []
    for start in range(0, max(len(stream), 1), window):
        chunk = stream[start:start + window]
        if len(chunk) < 2 or len(rows) == num_windows:
            break
        row = np.zeros(window, np.int32)
        row[:len(chunk)] = chunk
        rows.append(row)
        masks.append((np.arange(window) < len(chunk)).astype(np.int32))
    return np.stack(rows), np.stack(masks)


def keras_logits(model, ids: np.ndarray, mask: np.ndarray, batch: int = 8) -> np.ndarray:
    """float32 (N, T, V) logits of the Keras model."""
    out = [
        np.asarray(model({"token_ids": ids[i:i + batch], "padding_mask": mask[i:i + batch]}))
        for i in range(0, len(ids), batch)
    ]
    return np.concatenate(out).astype(np.float32)


def prompt_ids(tokenizer, prompt: str, keep: int) -> list[int]:
    """The prompt's last ``keep`` ids (``special_ids.prompt_ids``: an empty prompt is the
    start token, as ``tflm.generation.LanguageModel.generate``)."""
    return special_ids.prompt_ids(tokenizer, tokenizer.encode([prompt])[0])[-keep:]


def score_ids(tokenizer, text: str, keep: int) -> list[int]:
    """``special_ids.scored_ids`` of the text, truncated from the left to ``keep``."""
    return special_ids.scored_ids(tokenizer, tokenizer.encode([text])[0])[-keep:]


def keras_greedy(model, tokenizer, prompt: str, max_new_tokens: int) -> list[int]:
    """Greedy new tokens of ``prompt``, recomputing the full sequence at each step.

    Stops after the end-of-text token (included); the prompt is truncated from the left
    so that prompt + new tokens fit the window, as the exported signatures do.
    """
    window = int(model.max_sequence_length)
    max_new_tokens = min(max_new_tokens, window - 1)
    ids = prompt_ids(tokenizer, prompt, window - max_new_tokens)
    new = []
    for _ in range(max_new_tokens):
        x = np.asarray([ids], np.int32)
        logits = np.asarray(model({"token_ids": x, "padding_mask": np.ones_like(x)}))
        token = int(np.argmax(logits[0, -1]))
        new.append(token)
        ids.append(token)
        if token == tokenizer.eos_id:
            break
    return new


def strip_after_eos(tokens: list[int], eos_id: int | None) -> list[int]:
    """``tokens`` up to and including the first end-of-text token."""
    tokens = [int(t) for t in tokens]
    if eos_id is not None and eos_id in tokens:
        return tokens[:tokens.index(eos_id) + 1]
    return tokens


def prompts_from(texts: list[str], count: int = 3, words: int = 4) -> list[str]:
    """Short prompts: the first ``words`` words of the first ``count`` non-empty texts."""
    prompts = [" ".join(t.split()[:words]) for t in texts if t.split()]
    return prompts[:count] or ["The"]
