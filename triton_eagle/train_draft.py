"""Train an EAGLE-3 draft head for the target on the CPU (needs the `train` extra: torch).

One command, start to finish: prompts from packaged text -> greedy answers by the target
(numpy reference model, in-flight batching) with its hidden states at the captured layers,
kept from the same decoding -> draft vocabulary -> training-time-test training in torch
(bfloat16 matmuls under CPU autocast) -> a head folder in the public layout. Answers and
hidden states are cached under --work-dir and reused when their settings match.

At scale (a GPU): `--device cuda --synthesizer transformers` makes the same data with
transformers' LlamaForCausalLM over the same checkpoint, and `--self-instruct-prompts N`
adds N user turns sampled from the target itself (Magpie), filtered against MT-Bench.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np

MAX_FLOAT32_HEAD_BYTES = 30 * 1024 * 1024   # above this the head is stored in bfloat16


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="models/SmolLM2-135M-Instruct", help="target checkpoint folder")
    parser.add_argument("--out", default="heads/SmolLM2-135M-Instruct-Eagle3", help="head folder to write")
    parser.add_argument("--work-dir", default="out/train-draft", help="cache for answers and hidden states")
    parser.add_argument("--num-prompts", type=int, default=1000)
    parser.add_argument("--max-new-tokens", type=int, default=256, help="answer length cap (MT-Bench eval: 256)")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight while synthesizing")
    parser.add_argument("--layers", type=int, nargs="+", default=[1, 14, 26],
                        help="target layers to capture (-1 = final normed state)")
    parser.add_argument("--draft-vocab", type=int, default=8192)
    parser.add_argument("--init-layer", type=int, default=None,
                        help="target layer the draft layer starts from (default: the one after the deepest "
                             "captured layer; the last layer when capturing -1)")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--ttt-steps", type=int, default=3, help="draft steps unrolled in training")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--tokens-per-batch", type=int, default=1024)
    parser.add_argument("--val-every", type=int, default=20, help="every N-th conversation is held out")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--no-bf16-autocast", dest="bf16_autocast", action="store_false",
                        help="train with float32 matmuls (default: bfloat16 matmuls under CPU autocast)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="torch device for training (and the transformers "
                        "synthesizer): cpu, cuda, cuda:1, ...")
    parser.add_argument("--synthesizer", choices=("reference", "transformers"), default="reference",
                        help="target that writes the answers and hidden states: the numpy reference model "
                             "(served one) or transformers' LlamaForCausalLM on --device (float32)")
    parser.add_argument("--synthesis-batch", type=int, default=256,
                        help="sequences per transformers generate() call")
    parser.add_argument("--self-instruct-prompts", type=int, default=0,
                        help="also sample this many user turns from the target (Magpie), never sharing a "
                             "phrase with MT-Bench")
    parser.add_argument("--self-instruct-file", default=None,
                        help="read the sampled user turns from this JSONL file (one JSON string a line, as "
                             "train-draft writes them) instead of sampling; with --self-instruct-prompts N, "
                             "its first N")


def _cached(path: Path, settings: dict) -> bool:
    meta = path.with_suffix(".json")
    return path.is_file() and meta.is_file() and json.loads(meta.read_text()) == settings


def _mark(path: Path, settings: dict) -> None:
    path.with_suffix(".json").write_text(json.dumps(settings, indent=1))


def export_head(out_dir: Path, config: dict, weights: dict[str, np.ndarray]) -> str:
    """Write config.json + model.safetensors; bfloat16 when float32 would be too large to commit."""
    from python_backend.reference.eagle3 import save_eagle3_head

    float_bytes = sum(w.nbytes for w in weights.values() if w.dtype == np.float32)
    if float_bytes <= MAX_FLOAT32_HEAD_BYTES:
        save_eagle3_head(out_dir, {**config, "torch_dtype": "float32"}, weights)
        return "float32"
    # numpy has no bfloat16: write through torch (the numpy loader widens it back)
    import torch
    from safetensors.torch import save_file

    save_eagle3_head(out_dir, {**config, "torch_dtype": "bfloat16"}, {})
    tensors = {key: torch.from_numpy(np.ascontiguousarray(w)).to(torch.bfloat16) if w.dtype == np.float32
               else torch.from_numpy(np.ascontiguousarray(w)) for key, w in weights.items()}
    save_file(tensors, str(out_dir / "model.safetensors"))
    return "bfloat16"


def _self_instruct(hf_model, tokenizer, packaged: list[str], args, work_dir: Path) -> list[str]:
    """Sampled user turns, cached in --work-dir by their settings."""
    from python_backend.training.hf_target import self_instruct_prompts
    from python_backend.training.prompts import shares_phrase_with_mtbench

    path = work_dir / "self_instruct_prompts.jsonl"
    settings = {"model": str(Path(args.model).resolve()), "count": args.self_instruct_prompts, "seed": args.seed,
                "packaged_sha256": hashlib.sha256("\0".join(packaged).encode()).hexdigest()}
    if _cached(path, settings):
        print(f"self-instruct prompts: reusing {path}")
        return [json.loads(line) for line in path.read_text().splitlines()]
    copied, known = shares_phrase_with_mtbench(), set(packaged)
    sampled = self_instruct_prompts(hf_model, tokenizer, args.self_instruct_prompts,
                                    exclude=lambda text: text in known or copied(text), seed=args.seed,
                                    batch_size=args.synthesis_batch)
    path.write_text("".join(json.dumps(p) + "\n" for p in sampled))
    _mark(path, settings)
    return sampled


def _self_instruct_from_file(path: Path, packaged: list[str], count: int) -> list[str]:
    """Archived sampled user turns; the same checks as fresh ones (distinct, new, no MT-Bench phrase)."""
    from python_backend.training.prompts import shares_phrase_with_mtbench

    prompts = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if count:
        if len(prompts) < count:
            raise SystemExit(f"--self-instruct-file {path} holds {len(prompts)} prompts, fewer than "
                             f"--self-instruct-prompts {count}")
        prompts = prompts[:count]
    copied, known = shares_phrase_with_mtbench(), set(packaged)
    for number, prompt in enumerate(prompts, 1):
        if not isinstance(prompt, str) or prompt in known or copied(prompt):
            raise SystemExit(f"--self-instruct-file {path}: prompt {number} is not a new string free of "
                             f"MT-Bench phrases: {str(prompt)[:80]!r}")
    if len(set(prompts)) != len(prompts):
        raise SystemExit(f"--self-instruct-file {path} repeats prompts")
    print(f"self-instruct prompts: {len(prompts)} from {path}")
    return prompts


def run(args) -> int:
    try:
        import torch
    except ImportError:
        print("train-draft needs torch: pip install -e '.[train]'")
        return 2
    from ensemble.tokenizer import load_tokenizer
    from python_backend.reference.eagle3 import resolve_layers_to_capture
    from python_backend.reference.llama import LlamaModel
    from python_backend.training.head_model import head_config, head_from_target_config
    from python_backend.training.hf_target import captured_features, greedy_answers
    from python_backend.training.hidden_states import record_hidden_states
    from python_backend.training.prompts import training_prompts
    from python_backend.training.synthesize import (generate_answers_with_features, load_conversations,
                                                    save_conversations)
    from python_backend.training.ttt import Example, TrainSettings, train
    from python_backend.training.vocab import build_draft_vocab

    try:
        torch.empty(0, device=args.device)
    except (RuntimeError, AssertionError) as err:   # e.g. a CPU-only torch asked for cuda
        print(f"train-draft: --device {args.device} is not usable here: {err}")
        return 2
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    work_dir = Path(args.work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    target = LlamaModel.from_pretrained(args.model)
    target_config = json.loads((Path(args.model) / "config.json").read_text())
    tokenizer = load_tokenizer(args.model)
    layers = resolve_layers_to_capture(args.layers, target.num_layers)

    hf_model = None
    if args.synthesizer == "transformers" or (args.self_instruct_prompts and not args.self_instruct_file):
        from python_backend.training.hf_target import load_hf_target
        hf_model = load_hf_target(args.model, args.device)

    # a. data: greedy answers by the target
    prompts = training_prompts(args.num_prompts, seed=args.seed)
    if args.self_instruct_file:
        prompts += _self_instruct_from_file(Path(args.self_instruct_file), prompts, args.self_instruct_prompts)
    elif args.self_instruct_prompts:
        prompts += _self_instruct(hf_model, tokenizer, prompts, args, work_dir)
    data_settings = {"model": str(Path(args.model).resolve()), "max_new_tokens": args.max_new_tokens,
                     "prompts_sha256": hashlib.sha256("\0".join(prompts).encode()).hexdigest(),
                     "synthesizer": args.synthesizer}
    conversations_path = work_dir / "conversations.npz"
    features_path = work_dir / "features.npy"
    feature_settings = {**data_settings, "layers": layers}
    # b. ... and the target's hidden states at the captured layers, from the same decoding
    if _cached(conversations_path, data_settings) and _cached(features_path, feature_settings):
        conversations = load_conversations(conversations_path)
        features = np.load(features_path, mmap_mode="r")
        print(f"answers and hidden states: reusing {conversations_path} and {features_path}")
    elif _cached(conversations_path, data_settings):
        conversations = load_conversations(conversations_path)
        print(f"answers: reusing {conversations_path}; hidden states: one forward per conversation")
        features = (record_hidden_states(target, conversations, layers) if hf_model is None
                    else captured_features(hf_model, conversations, layers))
        np.save(features_path, features)
        _mark(features_path, feature_settings)
    else:
        print(f"answers: {len(prompts)} prompts, greedy, up to {args.max_new_tokens} tokens, "
              f"{args.concurrency} in flight; hidden states at layers {layers} kept")
        if args.synthesizer == "transformers":
            conversations = greedy_answers(hf_model, tokenizer, prompts, args.max_new_tokens, args.synthesis_batch)
            features = captured_features(hf_model, conversations, layers)
        else:
            conversations, features = generate_answers_with_features(target, tokenizer, prompts,
                                                                     args.max_new_tokens, args.concurrency, layers)
        save_conversations(conversations_path, conversations)
        _mark(conversations_path, data_settings)
        np.save(features_path, features)
        _mark(features_path, feature_settings)
        features = np.load(features_path, mmap_mode="r")
    del hf_model
    synthesis_s = time.perf_counter() - started

    examples, offset = [], 0
    for conversation in conversations:
        tokens = np.asarray(conversation.prompt_ids + conversation.answer_ids, dtype=np.int64)
        examples.append(Example(tokens, np.asarray(features[offset:offset + len(tokens)], dtype=np.float32),
                                answer_start=len(conversation.prompt_ids)))
        offset += len(tokens)
    val_examples = examples[::args.val_every]
    train_examples = [e for i, e in enumerate(examples) if i % args.val_every]

    # c. draft vocabulary from the training answers, then training-time-test training
    train_answers = [c.answer_ids for i, c in enumerate(conversations) if i % args.val_every]
    vocab = build_draft_vocab(train_answers, target.config.vocab_size, args.draft_vocab)
    val_answer_ids = np.concatenate([e.token_ids[e.answer_start:] for e in val_examples])
    print(f"data: {len(train_examples)} train / {len(val_examples)} held-out conversations, "
          f"{sum(len(a) for a in train_answers)} train answer tokens; draft vocab {args.draft_vocab} covers "
          f"{vocab.coverage(val_answer_ids):.1%} of held-out answer tokens")

    head = head_from_target_config(target_config, len(layers), args.draft_vocab, target.embed_tokens)
    # fc starts by passing through the deepest captured layer (closest to what the LM head reads),
    # and the draft layer as the target layer that reads that state
    fc_source = max(range(len(layers)), key=lambda i: layers[i] % (target.num_layers + 1))
    deepest = layers[fc_source]
    init_layer = args.init_layer if args.init_layer is not None else (
        target.num_layers - 1 if deepest == -1 else min(deepest + 1, target.num_layers - 1))
    head.initialise_from_target(target, init_layer, vocab.draft_target_ids, fc_source, args.seed)
    settings = TrainSettings(epochs=args.epochs, ttt_steps=args.ttt_steps, learning_rate=args.lr,
                             tokens_per_batch=args.tokens_per_batch, seed=args.seed,
                             bf16_autocast=args.bf16_autocast, device=args.device)
    summary = {
        "target": Path(args.model).name, "layers_to_capture": layers, "draft_vocab_size": args.draft_vocab,
        "init_layer": init_layer, "prompts": len(prompts), "self_instruct_prompts": len(prompts) - args.num_prompts,
        "self_instruct_file": args.self_instruct_file,
        "synthesizer": args.synthesizer, "device": args.device, "max_new_tokens": args.max_new_tokens,
        "train_conversations": len(train_examples), "heldout_conversations": len(val_examples),
        "train_tokens": int(sum(len(e.token_ids) for e in train_examples)),
        "train_answer_tokens": int(sum(len(a) for a in train_answers)),
        "heldout_answer_tokens": int(len(val_answer_ids)),
        "answers_at_max_new_tokens": int(sum(len(c.answer_ids) >= args.max_new_tokens for c in conversations)),
        "draft_vocab_heldout_coverage": round(vocab.coverage(val_answer_ids), 4),
        "settings": vars(settings), "synthesis_seconds": round(synthesis_s, 1), "threads": args.threads,
    }

    def save(history: dict) -> None:
        # after every epoch: an interrupted run still leaves its latest head
        weights = {**head.state_in_public_layout(), "d2t": vocab.d2t, "t2d": vocab.t2d}
        summary["dtype"] = export_head(Path(args.out), head_config(target_config, layers, args.draft_vocab,
                                                                    "float32"), weights)
        summary["history"] = history
        summary["total_seconds"] = round(time.perf_counter() - started, 1)
        (Path(args.out) / "training_log.json").write_text(json.dumps(summary, indent=1) + "\n")

    history = train(head, train_examples, val_examples, vocab, settings, after_epoch=save)
    final = history[f"epoch_{args.epochs}"]
    print(f"head written to {args.out} ({summary['dtype']}); held-out acceptance length "
          f"{final['simulated_acceptance_length']} (greedy decoding simulated; per-row average "
          f"{final['expected_acceptance_length']}); total {summary['total_seconds']} s")
    return 0
