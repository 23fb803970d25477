"""The ``tflm`` command: one sub-command per library function.

    tflm train --config=configs/gpt_mini.py --workdir=runs/x [--config.train.steps=100]
    tflm finetune --config=configs/classify_mini.py --config.init_from=runs/x/model \
        --config.data.train=train.tsv --config.data.validation=dev.tsv --workdir=runs/y
    tflm evaluate --model=runs/x/model [--corpus=...] [--split=validation]
    tflm generate --model=runs/x/model --prompt="Once" [--sampler=top_p ...]
    tflm fill-mask --model=runs/bert/model --text="The [MASK] statement." [--top_k=5]
    tflm embed --model=runs/bert/model --input=sentences.txt --output=vectors.npy
    tflm tokenizer --corpus=... --kind=bpe --vocab_size=8192 --out=DIR [--encode]
    tflm export --model=runs/x/model --out=DIR --format=saved_model|tflite
    tflm import --from=HF_DIR --out=MODEL_DIR [--tokenizer=DIR]

Each sub-command parses its absl flags and calls one library function; ``--config`` is an
``ml_collections`` config file whose fields are overridable as ``--config.train.steps=N``.
TensorFlow's C++ start-up lines (CUDA not found, CPU features) are hidden unless
``--verbose`` is given.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable

from absl import app, flags

from tflm.errors import ConfigError, TflmError

FLAGS = flags.FLAGS

SUMMARIES = {
    "train": "pre-train a model from a config file into a run directory",
    "evaluate": "perplexity of a model directory on a corpus split (JSON)",
    "generate": "generate text from a model directory",
    "fill-mask": "the most likely tokens at each [MASK] of a text (masked-LM models; JSON)",
    "embed": "sentence embeddings (.npy) of a text file with an encoder model directory",
    "finetune": "fine-tune a model directory (--config.init_from) on labelled files or new text",
    "export": "export a model directory as a SavedModel or TFLite model",
    "tokenizer": "train a tokenizer on a corpus (and build its token cache)",
    "import": "import a Hugging Face BERT / RoBERTa / GPT-2 directory as a model directory",
}


def _print_json(value) -> None:
    print(json.dumps(value, indent=2, sort_keys=True, default=str))


def _config_file(argv: list[str]) -> str | None:
    """The ``--config=PATH`` (or ``--config PATH``) of ``argv``, if any."""
    for i, arg in enumerate(argv):
        if arg.startswith("--config="):
            return arg[len("--config="):]
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def _check_config_overrides(argv: list[str]) -> None:
    """Fails on ``--config.section.key=...`` overrides naming a key that does not exist
    in the ``--config`` file (whose objective decides the model section's keys)."""
    overrides = [arg for arg in argv if arg.startswith("--config.")]
    if not overrides:
        return
    from tflm.config import base_config, run_config_file, unknown_key_error

    path = _config_file(argv)
    reference = run_config_file(path) if path else base_config()
    for arg in overrides:
        keys = arg[len("--config."):].split("=", 1)[0].split(".")
        node = reference
        for depth, key in enumerate(keys):
            if not hasattr(node, "keys") or key not in node:
                raise unknown_key_error(keys, depth, reference)
            node = node[key]


def _verbose(argv: list[str]) -> bool:
    """Whether ``--verbose`` is among the flags (read before flag parsing: parsing a
    ``--config`` file already imports TensorFlow)."""
    return any(arg in ("--verbose", "--verbose=true", "--verbose=True", "--verbose=1")
               for arg in argv)


def _quiet_tensorflow(verbose: bool) -> None:
    """Imports TensorFlow without its C++ start-up lines unless ``verbose``.

    Two of them (``cudart_stub``, written before absl logging starts) ignore
    ``TF_CPP_MIN_LOG_LEVEL``, so the import runs with file descriptor 2 on /dev/null, and
    so does the first look for GPUs (``failed call to cuInit`` on a machine without one:
    once absl's flags are parsed, TF's C++ logging no longer heeds the variable). Listing
    physical devices does not start the runtime, so MultiWorkerMirrored can still be made.
    """
    if verbose:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" in sys.modules:
        return
    from tflm.quiet import stderr_to_devnull

    with stderr_to_devnull():
        import tensorflow

        tensorflow.config.list_physical_devices("GPU")


def _define_config_flag() -> None:
    from ml_collections import config_flags

    config_flags.DEFINE_config_file(
        "config", None, "A configs/*.py file; override fields as --config.train.steps=N.",
        lock_config=True,
    )


def _loaded_config():
    from tflm.config import validate

    if FLAGS.config is None:
        raise ConfigError("--config is required, e.g. --config=configs/gpt_mini.py.")
    config = FLAGS.config
    config.unlock()
    return validate(config)


# --- sub-commands -----------------------------------------------------------------------


def _train_flags() -> None:
    _define_config_flag()
    flags.DEFINE_string("workdir", None, "Run directory (resumed if it holds this run).")
    flags.mark_flag_as_required("workdir")


def _train(argv) -> None:
    from tflm.training import train

    summary = train(_loaded_config(), FLAGS.workdir)
    print(_train_report(summary, FLAGS.workdir))
    _print_json(summary)


def _finetune(argv) -> None:
    from tflm.training.finetune import finetune

    summary = finetune(_loaded_config(), FLAGS.workdir)
    print(_train_report(summary, FLAGS.workdir))
    _print_json(summary)


def _train_report(summary: dict, workdir: str) -> str:
    """One line: each validation metric at step 0 -> at the end, and where things are."""
    changes = []
    for key in sorted(summary):
        if not key.startswith("validation_") or not isinstance(summary[key], float):
            continue
        initial = summary.get(f"initial_{key}")
        start = f"{initial:.4g} at step 0 -> " if initial is not None else ""
        changes.append(f"{key[len('validation_'):]} {start}{summary[key]:.4g}")
    if summary.get("unigram_validation_perplexity") is not None:
        unigram = summary["unigram_validation_perplexity"]
        changes.append(f"unigram baseline perplexity {unigram:.4g}")
    return (f"Validation after step {summary['final_step']}: {'; '.join(changes)}. "
            f"{summary['tokens_per_second']:.0f} tokens/s. Model: {summary['model_dir']}, "
            f"TensorBoard: tensorboard --logdir={workdir}/logs")


def _evaluate_flags() -> None:
    flags.DEFINE_string("model", None, "A model directory (e.g. runs/x/model).")
    flags.DEFINE_string("corpus", None, "Corpus to score (default: the model's own).")
    flags.DEFINE_enum("split", "validation", ["train", "validation", "test"], "Split.")
    flags.DEFINE_integer("batch_size", 16, "Sequences per batch.")
    flags.mark_flag_as_required("model")


def _evaluate(argv) -> None:
    from tflm.training import evaluate

    _print_json(evaluate(FLAGS.model, corpus=FLAGS.corpus, split=FLAGS.split,
                         batch_size=FLAGS.batch_size))


def _read_prompts(path: str) -> list[str]:
    from tflm.errors import DataError

    try:
        with open(path, encoding="utf-8") as f:
            prompts = [line.rstrip("\n") for line in f if line.strip()]
    except FileNotFoundError as e:
        raise DataError(f"--prompts_file '{path}' does not exist.") from e
    except UnicodeDecodeError as e:
        raise DataError(f"--prompts_file '{path}' is not UTF-8 (byte {e.start}); "
                        "re-save it as UTF-8.") from e
    if not prompts:
        raise DataError(f"--prompts_file '{path}' holds no prompts (one per line).")
    return prompts


def _generate_flags() -> None:
    flags.DEFINE_string("model", None, "A model directory (e.g. runs/x/model).")
    flags.DEFINE_multi_string("prompt", [], "A prompt; repeat for several.")
    flags.DEFINE_string("prompts_file", None, "A UTF-8 file with one prompt per line.")
    flags.DEFINE_integer("max_new_tokens", None, "Tokens to generate per prompt (default: "
                         "64, or half the model's positions if it has fewer than 128).")
    flags.DEFINE_string("sampler", "top_p", "greedy|temperature|top_k|top_p|beam.")
    flags.DEFINE_float("temperature", 0.8, "Softmax temperature.")
    flags.DEFINE_integer("top_k", None, "Keep the k most likely tokens (top_k sampler).")
    flags.DEFINE_float("top_p", 0.9, "Nucleus probability mass (top_p sampler).")
    flags.DEFINE_integer("num_beams", None, "Beam width (beam sampler).")
    flags.DEFINE_integer("seed", 0, "Sampling seed.")
    flags.DEFINE_bool("stream", None, "Stream tokens as produced (default: on for one "
                      "prompt in a terminal).")
    flags.mark_flag_as_required("model")


def _generate(argv) -> None:
    import tflm
    from tflm.errors import GenerationError

    prompts = list(FLAGS.prompt)
    if FLAGS.prompts_file:
        prompts += _read_prompts(FLAGS.prompts_file)
    if FLAGS.sampler != "beam":  # a bad name or option fails before the model loads
        from tflm.generation import make_sampler

        make_sampler(FLAGS.sampler, FLAGS.temperature, FLAGS.top_k, FLAGS.top_p)
    lm = tflm.load(FLAGS.model)
    if not hasattr(lm, "generate"):
        raise GenerationError(f"the model in {FLAGS.model} ({lm.config.train.objective}) does "
                              "not generate text; use a causal LM model directory.")
    max_new_tokens = FLAGS.max_new_tokens
    if max_new_tokens is None:
        max_new_tokens = min(64, lm.model.max_sequence_length // 2)
    options = dict(max_new_tokens=max_new_tokens, sampler=FLAGS.sampler,
                   temperature=FLAGS.temperature, top_k=FLAGS.top_k, top_p=FLAGS.top_p,
                   num_beams=FLAGS.num_beams, seed=FLAGS.seed)
    stream = FLAGS.stream if FLAGS.stream is not None else (
        len(prompts) == 1 and sys.stdout.isatty())
    if stream and len(prompts) == 1 and FLAGS.sampler != "beam":
        print(prompts[0], end="", flush=True)
        for piece in lm.stream(prompts[0], **options):
            print(piece, end="", flush=True)
        print()
        return
    for prompt, text in zip(prompts, lm.generate(prompts, **options)):
        print(f"--- {prompt!r}\n{prompt}{text}\n")


def _fill_mask_flags() -> None:
    flags.DEFINE_string("model", None, "A masked-LM model directory (e.g. runs/bert/model).")
    flags.DEFINE_multi_string("text", [], "A text holding the tokenizer's mask token "
                              "([MASK]); repeat for several.")
    flags.DEFINE_integer("top_k", 5, "Candidates per mask token.")
    flags.mark_flag_as_required("model")


def _fill_mask(argv) -> None:
    import tflm
    from tflm.errors import GenerationError

    if not FLAGS.text:
        raise GenerationError("give at least one --text with a [MASK] in it.")
    lm = tflm.load(FLAGS.model)
    if not hasattr(lm, "fill_mask"):
        raise GenerationError(f"the model in {FLAGS.model} ({lm.config.train.objective}) is "
                              "not a masked LM; fill-mask needs one (e.g. configs/bert_mini.py).")
    results = lm.fill_mask(list(FLAGS.text), top_k=FLAGS.top_k)
    _print_json([{"text": text, "masks": masks} for text, masks in zip(FLAGS.text, results)])


def _embed_flags() -> None:
    flags.DEFINE_string("model", None, "An encoder model directory (masked LM, ELECTRA, "
                        "SimCSE; a causal LM embeds with mean pooling).")
    flags.DEFINE_string("input", None, "A UTF-8 text file, one sentence per line (blank "
                        "lines are skipped).")
    flags.DEFINE_string("output", None, "The .npy file to write: float32 (sentences, "
                        "hidden), L2-normalised, row i = the i-th non-blank line.")
    flags.DEFINE_integer("batch_size", 64, "Sentences per compiled call.")
    flags.DEFINE_enum("pooling", None, ["first", "mean", "last", "max"], "Pooling (default: the "
                      "model's config.model.backbone.pooling, 'auto' -> mean).")
    for name in ("model", "input", "output"):
        flags.mark_flag_as_required(name)


def _embed(argv) -> None:
    from tflm.generation.embedding import embed_file

    report = embed_file(FLAGS.model, FLAGS.input, FLAGS.output, batch_size=FLAGS.batch_size,
                        pooling=FLAGS.pooling)
    print(_embed_report(report))
    _print_json(report)


def _embed_report(report: dict) -> str:
    """One line: how many sentences (and skipped blank lines), where, what shape."""
    skipped = report["blank_lines_skipped"]
    blank = f" ({skipped} blank line{'s' * (skipped != 1)} skipped)" if skipped else ""
    return (f"Embedded {report['sentences']} sentences{blank} of {report['input']} into "
            f"{report['output']}: float32 {tuple(report['shape'])}, {report['pooling']} "
            f"pooling, L2-normalised; {report['sentences_per_second']:.0f} sentences/s.")


def _tokenizer_flags() -> None:
    flags.DEFINE_string("corpus", "builtin", "builtin, a WikiText name, or files/dir/glob.")
    flags.DEFINE_enum("kind", "bpe", ["bpe", "wordpiece", "sentencepiece"], "Tokenizer kind.")
    flags.DEFINE_integer("vocab_size", 8192, "Vocabulary size.")
    flags.DEFINE_string("out", None, "Directory to save the tokenizer to.")
    flags.DEFINE_bool("lowercase", False, "Lower-case (and strip accents) before tokenizing.")
    flags.DEFINE_bool("encode", False, "Also build the token cache of every split.")
    flags.DEFINE_string("cache_dir", None, "Where --encode puts token caches (default: "
                        "config.data.cache_dir, where tflm train looks).")
    flags.mark_flag_as_required("out")


def _tokenizer(argv) -> None:
    from tflm.training.prepare import build_tokenizer

    _print_json(build_tokenizer(corpus=FLAGS.corpus, kind=FLAGS.kind,
                                vocabulary_size=FLAGS.vocab_size, out=FLAGS.out,
                                lowercase=FLAGS.lowercase, encode=FLAGS.encode,
                                cache_dir=FLAGS.cache_dir))


def _export_flags() -> None:
    flags.DEFINE_string("model", None, "A model directory (e.g. runs/x/model).")
    flags.DEFINE_string("out", None, "Output directory.")
    flags.DEFINE_enum("format", "saved_model", ["saved_model", "tflite"], "Format.")
    flags.DEFINE_enum("quantize", "none", ["none", "float16", "dynamic_int8", "int8"],
                      "TFLite quantization.")
    flags.mark_flag_as_required("model")
    flags.mark_flag_as_required("out")


def _export(argv) -> None:
    from tflm.export import export_model

    _print_json(export_model(FLAGS.model, FLAGS.out, format=FLAGS.format,
                             quantize=FLAGS.quantize))


def _import_flags() -> None:
    flags.DEFINE_string("from", None, "A Hugging Face model directory (config.json, "
                        "model.safetensors or its index + shards, tokenizer files), or a "
                        "sentence-transformers directory.")
    flags.DEFINE_string("out", None, "The tflm model directory to write (replaced).")
    flags.DEFINE_string("tokenizer", None, "A directory with the tokenizer files, when "
                        "--from has none.")
    flags.mark_flag_as_required("from")
    flags.mark_flag_as_required("out")


def _import(argv) -> None:
    from tflm.convert import import_hf

    _print_json(import_hf(FLAGS["from"].value, FLAGS.out, tokenizer=FLAGS.tokenizer))


COMMANDS: dict[str, tuple[Callable, Callable]] = {
    "train": (_train_flags, _train),
    "evaluate": (_evaluate_flags, _evaluate),
    "generate": (_generate_flags, _generate),
    "fill-mask": (_fill_mask_flags, _fill_mask),
    "embed": (_embed_flags, _embed),
    "finetune": (_train_flags, _finetune),
    "export": (_export_flags, _export),
    "tokenizer": (_tokenizer_flags, _tokenizer),
    "import": (_import_flags, _import),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: tflm <command> [--flags]", "", "commands:"]
    lines += [f"  {name:<{width}}  {SUMMARIES[name]}" for name in COMMANDS]
    lines += ["", "Run 'tflm <command> --help' for a command's flags."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``tflm`` console script; returns the exit status."""
    argv = list(sys.argv if argv is None else argv)
    if len(argv) < 2 or argv[1] in ("-h", "--help", "help"):
        print(usage())
        return 0 if len(argv) >= 2 else 2
    name = argv[1]
    if name not in COMMANDS:
        print(f"tflm: unknown command '{name}'.\n\n{usage()}", file=sys.stderr)
        return 2
    define, run = COMMANDS[name]
    define()
    flags.DEFINE_bool("verbose", False, "Show TensorFlow's C++ start-up and info logs.")

    def run_and_report(args) -> None:
        if FLAGS.verbose:
            from absl import logging

            logging.set_verbosity(logging.INFO)
        try:
            run(args)
        except TflmError as e:
            print(f"tflm {name}: error: {e}", file=sys.stderr)
            sys.exit(1)

    _quiet_tensorflow(_verbose(argv[2:]))
    try:
        _check_config_overrides(argv[2:])
    except ConfigError as e:
        print(f"tflm {name}: error: {e}", file=sys.stderr)
        return 1
    app.run(run_and_report, argv=[f"tflm {name}"] + argv[2:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
