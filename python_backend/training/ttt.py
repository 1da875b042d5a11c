"""The training loop: training-time test (EAGLE-3) over recorded target features.

Per batch, the head runs `ttt_steps` draft steps over whole sequences. Step 0 reads the
target's fused features f_j with token x_{j+1} and predicts x_{j+2}; step k reads step
k-1's own hidden_out at the same row with token x_{j+1+k} and predicts x_{j+2+k}. So the
head learns from the features it will really see when it chains at serve time, not only
from the target's. Loss: cross-entropy on the target's greedy next token in the draft
vocab, step k weighted 0.8^k (later steps matter less: they count only if earlier ones
were accepted); only answer tokens are targets.

Held-out metrics: per-step accuracy, `expected_acceptance_length` (leading correct steps
averaged over every answer row) and `simulated_acceptance_length`, which walks each held-out
answer the way the engine decodes it - draft 3 from the pending token, accept the leading
matches plus one target token, jump - so it weights rows as decoding visits them and counts
targets outside the draft vocab as rejections. The simulated figure is what the engine
measures on those conversations (greedy); the per-row average overstates it.

Matmuls run in bfloat16 under autocast when `bf16_autocast` is set (about twice the
float32 matmul rate on CPUs with AVX512-BF16 / AMX); weights, norms, residuals and the loss
stay float32. `device` moves the head and each batch (collated on the host) to a GPU.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from python_backend.training.head_model import Eagle3Head
from python_backend.training.vocab import DraftVocab

STEP_DECAY = 0.8


@dataclass
class Example:
    token_ids: np.ndarray       # (T,) prompt + answer
    features: np.ndarray        # (T, captured width) float32
    answer_start: int


@dataclass
class TrainSettings:
    epochs: int = 6
    ttt_steps: int = 3
    learning_rate: float = 6e-4
    warmup_steps: int = 30
    tokens_per_batch: int = 2048
    max_grad_norm: float = 0.5
    weight_decay: float = 0.0
    seed: int = 0
    bf16_autocast: bool = False
    device: str = "cpu"


@dataclass
class Batch:
    features: torch.Tensor            # (B, T, W)
    inputs: list[torch.Tensor]        # per step k: (B, T) token ids x_{j+1+k} (0 where past the end)
    targets: list[torch.Tensor]       # per step k: (B, T) draft ids of x_{j+2+k}
    masks: list[torch.Tensor]         # per step k: (B, T) bool, row has an answer-token target in the draft vocab
    answer_starts: list[int] | None = None   # per example: index of its first answer token
    lengths: list[int] | None = None         # per example: prompt + answer tokens

    def to(self, device) -> "Batch":
        move = lambda tensors: [t.to(device, non_blocking=True) for t in tensors]
        return Batch(self.features.to(device, non_blocking=True), move(self.inputs), move(self.targets),
                     move(self.masks), self.answer_starts, self.lengths)


def length_groups(examples: list[Example], tokens_per_batch: int) -> list[list[int]]:
    """Example indices in length-sorted groups of at most `tokens_per_batch` padded tokens."""
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].token_ids))
    groups, current = [], []
    for index in order:
        longest = max([len(examples[i].token_ids) for i in current] + [len(examples[index].token_ids)])
        if current and longest * (len(current) + 1) > tokens_per_batch:
            groups.append(current)
            current = []
        current.append(index)
    if current:
        groups.append(current)
    return groups


def make_batches(examples: list[Example], vocab: DraftVocab, ttt_steps: int, tokens_per_batch: int,
                 shuffle_rng: np.random.Generator | None) -> list[Batch]:
    """Length-sorted batches (little padding), in shuffled order when a rng is given."""
    return list(iter_batches(examples, vocab, ttt_steps, length_groups(examples, tokens_per_batch), shuffle_rng))


def iter_batches(examples: list[Example], vocab: DraftVocab, ttt_steps: int, groups: list[list[int]],
                 shuffle_rng: np.random.Generator | None):
    """Collated one at a time: an epoch of features is never all in memory twice."""
    groups = list(groups)
    if shuffle_rng is not None:
        shuffle_rng.shuffle(groups)
    for group in groups:
        yield collate([examples[i] for i in group], vocab, ttt_steps)


def collate(examples: list[Example], vocab: DraftVocab, ttt_steps: int) -> Batch:
    length = max(len(e.token_ids) for e in examples)
    width = examples[0].features.shape[1]
    features = np.zeros((len(examples), length, width), dtype=np.float32)
    inputs = np.zeros((ttt_steps, len(examples), length), dtype=np.int64)
    targets = np.zeros_like(inputs)
    masks = np.zeros(inputs.shape, dtype=bool)
    rows = np.arange(length)
    for b, example in enumerate(examples):
        count = len(example.token_ids)
        features[b, :count] = example.features
        for k in range(ttt_steps):
            # row j: input x_{j+1+k}, target x_{j+2+k}
            source = rows + 1 + k
            inputs[k, b] = np.where(source < count, example.token_ids[np.minimum(source, count - 1)], 0)
            target_pos = rows + 2 + k
            in_range = target_pos < count
            target_ids = example.token_ids[np.minimum(target_pos, count - 1)]
            draft_ids = vocab.target_to_draft[target_ids]
            masks[k, b] = in_range & (target_pos >= example.answer_start) & (draft_ids >= 0)
            targets[k, b] = np.where(masks[k, b], draft_ids, 0)
    return Batch(torch.from_numpy(features), list(torch.from_numpy(inputs)), list(torch.from_numpy(targets)),
                 list(torch.from_numpy(masks)), [e.answer_start for e in examples],
                 [len(e.token_ids) for e in examples])


def simulate_decoding(step_correct: list[np.ndarray], answer_start: int, length: int) -> tuple[int, int]:
    """(accepted draft tokens, engine steps) of greedy speculative decoding over one conversation.

    step_correct[k][j]: draft step k at row j proposes x_{j+2+k} correctly. After prefill the
    pending token is x_n (n = answer_start, the first answer token); each step drafts from
    row p - 2 for the next token x_p, accepts the leading correct drafts, and adds one.
    Acceptance length = 1 + accepted / steps, as the engine counts it.
    """
    accepted_total = steps = 0
    position = answer_start + 1
    while position < length:
        accepted = 0
        for k, correct in enumerate(step_correct):
            if position + k < length and correct[position - 2]:
                accepted += 1
            else:
                break
        steps += 1
        accepted_total += accepted
        position += accepted + 1
    return accepted_total, steps


def unroll(head: Eagle3Head, batch: Batch) -> list[torch.Tensor]:
    """hidden_out of each draft step, (B, T, hidden) each."""
    features = head.fuse(batch.features)
    past_kv: list = []
    all_hidden = []
    for k, token_ids in enumerate(batch.inputs):
        features = head.step(token_ids, features, k, past_kv)
        all_hidden.append(features)
    return all_hidden


def batch_loss(head: Eagle3Head, batch: Batch) -> tuple[torch.Tensor, list[float], list[int]]:
    """(weighted loss, per-step correct counts, per-step target counts)."""
    loss = torch.zeros((), device=batch.features.device)
    correct, counted = [], []
    for k, (hidden, targets, mask) in enumerate(zip(unroll(head, batch), batch.targets, batch.masks)):
        selected = head.logits(hidden[mask])
        if len(selected):
            loss = loss + STEP_DECAY ** k * torch.nn.functional.cross_entropy(selected, targets[mask])
        correct.append(int((selected.argmax(-1) == targets[mask]).sum()))
        counted.append(int(mask.sum()))
    return loss, correct, counted


@torch.no_grad()
def evaluate(head: Eagle3Head, batches: list[Batch]) -> dict:
    """Per-step accuracy, and the chain length a greedy verifier would accept per row.

    `expected_acceptance_length` = 1 + mean over rows (all steps' targets present) of the
    number of leading steps whose argmax equals the target - the serve-time acceptance
    length if every row were a drafting step.
    """
    head.eval()
    correct = counted = None
    losses, accepted_sum, chain_rows = [], 0, 0
    simulated_accepted = simulated_steps = 0
    device = next(head.parameters()).device
    for batch in batches:
        batch = batch.to(device)
        all_logits = [head.logits(hidden) for hidden in unroll(head, batch)]
        step_correct = []
        loss = 0.0
        for k, (logits, targets, mask) in enumerate(zip(all_logits, batch.targets, batch.masks)):
            if mask.any():
                loss += STEP_DECAY ** k * float(torch.nn.functional.cross_entropy(logits[mask], targets[mask]))
            step_correct.append((logits.argmax(-1) == targets) & mask)
        losses.append(loss)
        c = [int(s.sum()) for s in step_correct]
        n = [int(m.sum()) for m in batch.masks]
        correct = c if correct is None else [a + b for a, b in zip(correct, c)]
        counted = n if counted is None else [a + b for a, b in zip(counted, n)]
        full_rows = torch.stack(batch.masks).all(0)
        leading = torch.cumprod(torch.stack(step_correct).int(), dim=0).sum(0)
        accepted_sum += int(leading[full_rows].sum())
        chain_rows += int(full_rows.sum())
        if batch.answer_starts is not None:
            correct_rows = [s.cpu().numpy() for s in step_correct]
            for b, (answer_start, length) in enumerate(zip(batch.answer_starts, batch.lengths)):
                accepted, steps = simulate_decoding([c[b] for c in correct_rows], answer_start, length)
                simulated_accepted += accepted
                simulated_steps += steps
    head.train()
    return {"loss": float(np.mean(losses)),
            "step_accuracy": [round(a / max(b, 1), 4) for a, b in zip(correct, counted)],
            "expected_acceptance_length": round(1 + accepted_sum / max(chain_rows, 1), 3),
            "simulated_acceptance_length": round(1 + simulated_accepted / max(simulated_steps, 1), 3)}


def train(head: Eagle3Head, train_examples: list[Example], val_examples: list[Example], vocab: DraftVocab,
          settings: TrainSettings, log=print, after_epoch=None) -> dict:
    """Train in place; `after_epoch(history)` runs after each epoch (the caller saves the head there)."""
    torch.manual_seed(settings.seed)
    head.to(settings.device)
    rng = np.random.default_rng(settings.seed)
    val_batches = make_batches(val_examples, vocab, settings.ttt_steps, settings.tokens_per_batch, None)
    train_groups = length_groups(train_examples, settings.tokens_per_batch)
    total_steps = settings.epochs * len(train_groups)
    parameters = [p for p in head.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=settings.learning_rate, betas=(0.9, 0.95),
                                  weight_decay=settings.weight_decay)

    def lr_at(step: int) -> float:
        # linear warm-up, cosine decay to 10%
        if step < settings.warmup_steps:
            return settings.learning_rate * (step + 1) / settings.warmup_steps
        progress = (step - settings.warmup_steps) / max(1, total_steps - settings.warmup_steps)
        return settings.learning_rate * (0.1 + 0.45 * (1 + math.cos(math.pi * min(progress, 1.0))))

    history = {"start": evaluate(head, val_batches)}
    log(f"  before training: val {history['start']}")
    start = time.perf_counter()
    step = 0
    for epoch in range(settings.epochs):
        epoch_loss, epoch_batches = 0.0, 0
        for batch in iter_batches(train_examples, vocab, settings.ttt_steps, train_groups, rng):
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step)
            with torch.autocast(torch.device(settings.device).type, dtype=torch.bfloat16,
                                enabled=settings.bf16_autocast):
                loss, _, _ = batch_loss(head, batch.to(settings.device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, settings.max_grad_norm)
            optimizer.step()
            epoch_loss += float(loss.detach())
            epoch_batches += 1
            step += 1
        val = evaluate(head, val_batches)
        history[f"epoch_{epoch + 1}"] = {"train_loss": round(epoch_loss / epoch_batches, 4), **val}
        log(f"  epoch {epoch + 1}/{settings.epochs}: train loss {epoch_loss / epoch_batches:.4f}  val {val}  "
            f"({time.perf_counter() - start:.0f} s)")
        history["optimizer_steps"] = step
        history["train_seconds"] = round(time.perf_counter() - start, 1)
        if after_epoch is not None:
            after_epoch(history)
    return history
