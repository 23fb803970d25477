"""TensorBoard extras keyed by global step: metrics, throughput, MFU; the causal LM's hooks.

Keras' own ``keras.callbacks.TensorBoard`` (also used by the trainer) writes
``epoch_*`` scalars keyed by epoch; :func:`write_model_graph` writes the model graph.
``TrainingMonitor`` (every objective) adds, every ``log_every`` steps, in
``<logs>/train``: every number in the step logs (``loss``, ``grad_norm`` and the task's
metrics, e.g. ``perplexity`` and ``accuracy``: Keras' running means since the epoch
began), ``learning_rate``, ``tokens_per_second``, ``examples_per_second`` and ``mfu``;
and after each validation, in ``<logs>/validation``: the validation loss and metrics
(plus their step-0 values).

The causal LM's objective hook :func:`causal_lm_callbacks` adds ``UnigramBaseline``
(``unigram_perplexity`` at step 0 in ``<logs>/validation``, the bar to beat, and
``unigram_validation_perplexity`` in the run summary) and ``TextSamples`` (greedy
continuations of the configured prompts as ``samples`` text in ``<logs>/samples``).
"""

from __future__ import annotations

import os
import time

import keras
import tensorflow as tf
from absl import logging

from tflm.generation import LanguageModel
from tflm.training.baseline import unigram_perplexity
from tflm.training.callbacks import StepCallback


def _scalars(logs: dict, prefix: str = "") -> dict:
    """The numbers among ``logs`` whose key starts with ``prefix`` (prefix removed)."""
    values = {}
    for key, value in logs.items():
        if key.startswith(prefix) and (prefix or not key.startswith("val_")):
            try:
                values[key[len(prefix):]] = float(value)
            except (TypeError, ValueError):
                continue
    return values


def write_model_graph(log_dir: str, task, input_spec) -> None:
    """Writes the graph of the task model's forward pass to TensorBoard's Graphs tab.

    Args:
        input_spec: the model inputs' ``tf.TensorSpec`` structure (the first element of
            the pipeline's ``element_spec``).
    """
    graph = tf.function(
        lambda x: task(x, training=False)).get_concrete_function(input_spec).graph
    writer = tf.summary.create_file_writer(log_dir)
    with writer.as_default():
        tf.summary.graph(graph)
    writer.close()


class TrainingMonitor(StepCallback):
    """Step-keyed scalars and throughput (see the module docstring).

    Throughput counts only time inside train steps (validation, samples and other
    callbacks are left out); the first step of each ``fit`` (tracing and XLA compilation)
    is left out of :meth:`throughput`.

    Args:
        steps_per_epoch: Keras epoch length in steps.
        log_dir: the TensorBoard directory (``<workdir>/logs``).
        log_every: steps between train scalars.
        tokens_per_step: tokens in one global batch.
        examples_per_step: sequences in one global batch.
        flops_per_token: training FLOPs per token of the model.
        peak_flops: peak FLOP/s of the devices, None if unknown (then no ``mfu``).
        initial_validation: validation logs at step 0 to write (fresh runs), or None.
    """

    def __init__(self, steps_per_epoch, log_dir, log_every, tokens_per_step,
                 examples_per_step, flops_per_token, peak_flops=None,
                 initial_validation=None):
        super().__init__(steps_per_epoch)
        self.log_dir = log_dir
        self.log_every = log_every
        self.tokens_per_step = tokens_per_step
        self.examples_per_step = examples_per_step
        self.flops_per_token = flops_per_token
        self.peak_flops = peak_flops
        self.initial_validation = initial_validation
        self._writers = {}
        self._window = [0, 0.0]  # steps, seconds since the last log
        self._total = [0, 0.0]  # steps, seconds, first step of each fit left out
        self._first_batch = True
        self._batch_start = 0.0

    def _writer(self, name):
        if name not in self._writers:
            self._writers[name] = tf.summary.create_file_writer(os.path.join(self.log_dir, name))
        return self._writers[name]

    def _write(self, name, values, step):
        with self._writer(name).as_default(step=step):
            for tag, value in values.items():
                tf.summary.scalar(tag, value)
        self._writer(name).flush()

    def on_train_begin(self, logs=None):
        self._first_batch = True
        if self.initial_validation is not None:
            self._write("validation", _scalars(self.initial_validation), 0)

    def on_train_batch_begin(self, batch, logs=None):
        self._batch_start = time.perf_counter()

    def on_step_end(self, step, logs):
        log_now = step % self.log_every == 0
        values = _scalars(logs) if log_now else {}
        seconds = time.perf_counter() - self._batch_start  # after float(): synced
        self._window[0] += 1
        self._window[1] += seconds
        if not self._first_batch:
            self._total[0] += 1
            self._total[1] += seconds
        self._first_batch = False
        if not log_now:
            return
        steps_per_second = self._window[0] / max(self._window[1], 1e-9)
        values["learning_rate"] = self._learning_rate()
        values["tokens_per_second"] = steps_per_second * self.tokens_per_step
        values["examples_per_second"] = steps_per_second * self.examples_per_step
        if self.peak_flops:
            values["mfu"] = values["tokens_per_second"] * self.flops_per_token / self.peak_flops
        self._write("train", values, step)
        self._window = [0, 0.0]

    def _learning_rate(self) -> float:
        optimizer = self.model.optimizer
        optimizer = getattr(optimizer, "inner_optimizer", optimizer)
        return float(optimizer.learning_rate)

    def on_epoch_end(self, epoch, logs=None):
        values = _scalars(logs or {}, "val_")
        if values:
            self._write("validation", values, self.step)

    def on_train_end(self, logs=None):
        for writer in self._writers.values():
            writer.close()
        self._writers = {}

    def throughput(self) -> dict:
        """``tokens_per_second``, ``examples_per_second``, ``mfu`` (None if unknown)."""
        steps, seconds = self._total if self._total[0] else self._window
        per_second = steps / seconds if seconds else 0.0
        tokens = per_second * self.tokens_per_step
        return {
            "tokens_per_second": tokens,
            "examples_per_second": per_second * self.examples_per_step,
            "mfu": tokens * self.flops_per_token / self.peak_flops if self.peak_flops else None,
        }


class TextSamples(StepCallback):
    """Greedy continuations of ``prompts``, every ``every`` steps and at ``last_step``.

    Written with ``tf.summary.text`` (tag ``samples``) to ``<log_dir>/samples`` and
    logged with absl.

    Args:
        steps_per_epoch: Keras epoch length in steps.
        task: the task model (``GPT``) being trained.
        tokenizer: its tokenizer.
        log_dir: the TensorBoard directory.
        prompts: the prompt strings.
        max_new_tokens: tokens generated per prompt.
        every: steps between samples.
        last_step: the run's final step, always sampled.
    """

    def __init__(self, steps_per_epoch, task, tokenizer, log_dir, prompts, max_new_tokens,
                 every, last_step):
        super().__init__(steps_per_epoch)
        self.language_model = LanguageModel(task, tokenizer)
        self.log_dir = log_dir
        self.prompts = list(prompts)
        self.max_new_tokens = min(max_new_tokens, task.max_sequence_length // 2)
        self.every = every
        self.last_step = last_step
        self._writer = None

    def samples(self) -> list[str]:
        """Each prompt followed by its greedy continuation (up to the end-of-text token)."""
        continuations = self.language_model.generate(
            self.prompts, max_new_tokens=self.max_new_tokens, sampler="greedy", truncate=True)
        return [p + c for p, c in zip(self.prompts, continuations)]

    def on_step_end(self, step, logs):
        if step % self.every and step != self.last_step:
            return
        texts = self.samples()
        for text in texts:
            logging.info("Sample at step %d: %r", step, text)
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(os.path.join(self.log_dir, "samples"))
        with self._writer.as_default(step=step):
            tf.summary.text("samples", tf.constant(texts))
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class UnigramBaseline(keras.callbacks.Callback):
    """The unigram perplexity of the validation labels: the bar a causal LM must beat.

    Computed once from the train split's token counts (``baseline.unigram_perplexity``);
    written as ``unigram_perplexity`` at step 0 to ``<log_dir>/validation`` on a fresh
    run, and reported by :meth:`summary_fields` as ``unigram_validation_perplexity``.
    """

    def __init__(self, context):
        super().__init__()
        tokenizer = context.tokenizer
        self.value = unigram_perplexity(
            context.caches["train"], context.eval_dataset, tokenizer.vocabulary_size,
            tokenizer.eos_id)
        self.log_dir = context.log_dir
        self.write = context.fresh_start

    def on_train_begin(self, logs=None):
        if self.write:
            writer = tf.summary.create_file_writer(os.path.join(self.log_dir, "validation"))
            with writer.as_default(step=0):
                tf.summary.scalar("unigram_perplexity", self.value)
            writer.close()

    def summary_fields(self) -> dict:
        return {"unigram_validation_perplexity": self.value}


def causal_lm_callbacks(task, context) -> list:
    """The ``causal_lm`` objective's callbacks hook (``tflm.models.tasks``): the unigram
    baseline, and text samples every ``config.train.sample_every`` steps (0 = none)."""
    t = context.config.train
    callbacks = [UnigramBaseline(context)]
    if t.sample_every > 0 and t.sample_prompts:
        callbacks.append(TextSamples(context.steps_per_epoch, task, context.tokenizer,
                                     context.log_dir, t.sample_prompts, t.sample_tokens,
                                     t.sample_every, t.steps))
    return callbacks
