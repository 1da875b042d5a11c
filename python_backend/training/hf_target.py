"""The target through Hugging Face transformers (torch): training data at scale on any device.

The numpy reference model is the one the engine serves, so the default data path uses it.
On a GPU the same data - greedy answers through the chat template, the hidden states at the
captured layers - comes from transformers' LlamaForCausalLM over the same checkpoint folder,
in float32 (TF32 off), batched with left padding and a KV cache. It also samples user turns
from the target itself (Magpie: the chat template up to "<|im_start|>user\\n", then the model
writes the question), which gives many more varied prompts than packaged text holds.

Capture indices mean what they mean in `LlamaModel.forward`: i >= 0 is the residual stream
after decoder layer i (read with a forward hook on that layer), -1 the final normed state.
"""
from __future__ import annotations

import re
import time
from typing import Sequence

import numpy as np
import torch

from python_backend.reference.llama import FINAL_HIDDEN_STATE
from python_backend.training.synthesize import Conversation


def load_hf_target(model_dir: str, device: str):
    """LlamaForCausalLM in float32 on `device`, for inference only."""
    from transformers import AutoModelForCausalLM

    torch.backends.cuda.matmul.allow_tf32 = False    # keep float32: the head fits the served model's states
    torch.backends.cudnn.allow_tf32 = False
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa")
    return model.to(device).eval()


def _left_padded(batch: Sequence[Sequence[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(ids) for ids in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, tokens in enumerate(batch):
        ids[row, width - len(tokens):] = torch.tensor(tokens, dtype=torch.long)
        mask[row, width - len(tokens):] = 1
    return ids.to(device), mask.to(device)


def _cut_at(tokens: list[int], stop_id: int, keep_stop: bool) -> tuple[list[int], bool]:
    if stop_id in tokens:
        end = tokens.index(stop_id)
        return tokens[:end + 1] if keep_stop else tokens[:end], True
    return tokens, False


@torch.no_grad()
def _generate(model, prompts: list[list[int]], max_new_tokens: int, eos_id: int, batch_size: int,
              sample: dict | None, seed: int, log, label: str) -> list[list[int]]:
    """New tokens per prompt (eos kept when generated), in prompt order; length-sorted batches."""
    device = next(model.parameters()).device
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    results: list[list[int] | None] = [None] * len(prompts)
    start, done = time.perf_counter(), 0
    for first in range(0, len(order), batch_size):
        rows = order[first:first + batch_size]
        ids, mask = _left_padded([prompts[i] for i in rows], eos_id, device)
        torch.manual_seed(seed + first)
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                             eos_token_id=eos_id, pad_token_id=eos_id, min_new_tokens=1,
                             do_sample=sample is not None, **(sample or {"temperature": None, "top_p": None,
                                                                         "top_k": None}))
        for row, index in enumerate(rows):
            results[index] = _cut_at(out[row, ids.shape[1]:].tolist(), eos_id, keep_stop=True)[0]
        done += len(rows)
        tokens = sum(len(r) for r in results if r is not None)
        log(f"  {label} {done}/{len(prompts)}: {tokens} tokens, {tokens / (time.perf_counter() - start):.0f} tok/s")
    return results


def greedy_answers(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int = 256,
                   log=print) -> list[Conversation]:
    """The target's greedy answers through its chat template; eos kept when it stopped by itself
    (as `generate_answers_with_features` does: the head must learn to predict it)."""
    rendered = [tokenizer.render_chat([{"role": "user", "content": p}]) for p in prompts]
    answers = _generate(model, rendered, max_new_tokens, tokenizer.eos_token_id, batch_size, None, 0, log, "answers")
    return [Conversation(list(r), a) for r, a in zip(rendered, answers)]


def user_turn_prefix(tokenizer) -> list[int]:
    """The chat template's tokens up to where a user's words begin (the default system turn included)."""
    first = tokenizer.render_chat([{"role": "user", "content": "Hello"}])
    second = tokenizer.render_chat([{"role": "user", "content": "Why"}])
    common = 0
    while common < min(len(first), len(second)) and first[common] == second[common]:
        common += 1
    return first[:common]


def usable_user_turn(text: str) -> bool:
    """A sampled user turn worth answering: a few words of prose, no template markup."""
    words = re.findall(r"[A-Za-z']+", text)
    return 4 <= len(words) <= 300 and "<|" not in text and len(set(words)) >= 3


@torch.no_grad()
def self_instruct_prompts(model, tokenizer, count: int, exclude=lambda text: False, seed: int = 0,
                          batch_size: int = 512, max_prompt_tokens: int = 160, temperature: float = 1.0,
                          top_p: float = 0.95, log=print) -> list[str]:
    """`count` distinct user turns sampled from the target (Magpie), in sampling order.

    `exclude(text)` rejects a candidate (the caller passes its MT-Bench phrase check and the
    prompts it already has). Raises when ten rounds in a row add nothing new."""
    prefix = user_turn_prefix(tokenizer)
    found: list[str] = []
    seen: set[str] = set()
    dry_rounds, round_index = 0, 0
    while len(found) < count:
        sampled = _generate(model, [prefix] * batch_size, max_new_tokens=max_prompt_tokens,
                            eos_id=tokenizer.eos_token_id, batch_size=batch_size,
                            sample={"temperature": temperature, "top_p": top_p, "top_k": 0},
                            seed=seed + 1_000_003 * round_index, log=lambda *_: None, label="prompts")
        round_index += 1
        added = 0
        for tokens in sampled:
            body, finished = _cut_at(tokens, tokenizer.eos_token_id, keep_stop=False)
            text = tokenizer.decode(body).strip()
            key = " ".join(text.lower().split())
            if not finished or key in seen or not usable_user_turn(text) or exclude(text):
                continue
            seen.add(key)
            found.append(text)
            added += 1
            if len(found) == count:
                break
        log(f"  self-instruct prompts: {len(found)}/{count} (round {round_index}: {added} of {batch_size} kept)")
        dry_rounds = 0 if added else dry_rounds + 1
        if dry_rounds == 10:
            raise RuntimeError(f"self-instruct sampling stalled at {len(found)} of {count} prompts")
    return found


class _Capture:
    """Forward hooks that keep the residual stream after given decoder layers (and the final norm)."""

    def __init__(self, model, layers: Sequence[int]):
        self.states: dict[int, torch.Tensor] = {}
        decoder = model.model
        self.handles = []
        for index in layers:
            module = decoder.norm if index == FINAL_HIDDEN_STATE else decoder.layers[index]
            self.handles.append(module.register_forward_hook(self._keeper(index)))

    def _keeper(self, index: int):
        def keep(_module, _inputs, output):
            self.states[index] = output[0] if isinstance(output, tuple) else output
        return keep

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


@torch.no_grad()
def captured_features(model, conversations: list[Conversation], layers: Sequence[int],
                      tokens_per_batch: int = 65536, log=print) -> np.ndarray:
    """(total tokens, len(layers) * hidden) float32, conversations concatenated in order, like
    `record_hidden_states`: one right-padded causal forward per batch (padding sits after every
    real token, so it changes nothing the real rows compute)."""
    device = next(model.parameters()).device
    hidden = model.config.hidden_size
    sequences = [c.prompt_ids + c.answer_ids for c in conversations]
    lengths = [len(s) for s in sequences]
    starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    features = np.empty((int(starts[-1]), len(layers) * hidden), dtype=np.float32)
    order = sorted(range(len(sequences)), key=lambda i: lengths[i])
    capture = _Capture(model, layers)
    start_time = time.perf_counter()
    try:
        first = 0
        while first < len(order):
            rows = [order[first]]
            while first + len(rows) < len(order) and \
                    lengths[order[first + len(rows)]] * (len(rows) + 1) <= tokens_per_batch:
                rows.append(order[first + len(rows)])
            first += len(rows)
            width = max(lengths[i] for i in rows)
            ids = torch.zeros((len(rows), width), dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for row, index in enumerate(rows):
                ids[row, :lengths[index]] = torch.tensor(sequences[index])
                mask[row, :lengths[index]] = 1
            model.model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False)
            stacked = torch.cat([capture.states[index] for index in layers], dim=-1).float().cpu().numpy()
            for row, index in enumerate(rows):
                features[starts[index]:starts[index + 1]] = stacked[row, :lengths[index]]
    finally:
        capture.close()
    log(f"  hidden states: {len(features)} tokens x {features.shape[1]} in {time.perf_counter() - start_time:.0f} s")
    return features
