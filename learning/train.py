"""Training a LoRA adapter on the SLM, from lessons, on the CPU (CUDA when present).

The base weights come from the SLM's own GGUF, which transformers dequantizes, so the
adapter learns against exactly the weights llama.cpp runs. Each lesson is its prompt in the
model's chat template with the verified output as the assistant's reply; only the reply's
tokens count in the loss. A lesson longer than ``max_tokens`` is left out (counted), never
cut: the SLM sees whole prompts when it serves.

Training keeps a checkpoint in its work folder every ``save_every`` steps, at the time limit
and on Ctrl-C; the same call with the same lessons and options goes on from it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import resource
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from tierflow.memory.lessons import Lesson
from tierflow.optional import require
from tierflow.records import OnProgress, Progress

__all__ = ["TrainOptions", "TrainResult", "train_adapter", "peak_memory_mb"]

CHECKPOINT = "checkpoint"


@dataclass(frozen=True)
class TrainOptions:
    """How an adapter is trained: sized for a laptop's CPU by default (a low rank, short
    sequences, one pass over at most ``max_steps`` lessons). The learning rate is the one
    whose adapters helped on the learning curve (``docs/learning.md``); 5e-4 did not."""

    rank: int = 8
    alpha: int = 16
    targets: tuple[str, ...] = ("q_proj", "v_proj")
    learning_rate: float = 1e-4
    epochs: int = 1
    max_steps: int = 400
    max_tokens: int = 1024
    max_minutes: float = 60.0
    seed: int = 0
    save_every: int = 10


@dataclass
class TrainResult:
    """What a training run did: steps, time, memory, the last losses, and how it ended."""

    adapter_dir: Path
    steps: int
    planned: int
    seconds: float
    peak_memory_mb: float
    device: str
    ended: Literal["done", "time_limit", "interrupted"]
    resumed_from: int = 0
    left_out_too_long: int = 0
    learning_rate: float | None = None
    losses: list[float] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["adapter_dir"] = str(self.adapter_dir)
        data["losses"] = [round(loss, 4) for loss in self.losses[-20:]]
        return data


def peak_memory_mb() -> float:
    """This process's peak resident memory so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def train_adapter(
    base_gguf: Path,
    lessons: Sequence[Lesson],
    work: Path,
    options: TrainOptions = TrainOptions(),
    *,
    on_progress: OnProgress | None = None,
) -> TrainResult:
    """Train on ``lessons`` (one per step, shuffled by ``seed``) and save the adapter in
    peft's format under ``work/adapter``; goes on from ``work``'s checkpoint when it holds
    one for the same lessons and options."""
    require("torch", "transformers", "peft", "safetensors", purpose="tierflow learn")
    import torch
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    transformers_logging.set_verbosity_error()  # type: ignore[no-untyped-call]

    report: OnProgress = on_progress or (lambda _: None)
    started = time.perf_counter()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything comes from the GGUF on disk
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")  # the GGUF dequantization's bar; tierflow shows its own
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
    warnings.filterwarnings("ignore", message="Could not find a config file", module="peft")
    torch.manual_seed(options.seed)
    torch.set_num_threads(os.cpu_count() or 1)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    report(Progress("loading the SLM's weights for training", note=f"{base_gguf.name} on the {device}"))
    tokenizer = AutoTokenizer.from_pretrained(str(base_gguf.parent), gguf_file=base_gguf.name)
    model: Any = AutoModelForCausalLM.from_pretrained(
        str(base_gguf.parent), gguf_file=base_gguf.name, dtype=torch.float32
    )
    model = model.to(device)
    config = LoraConfig(
        r=options.rank,
        lora_alpha=options.alpha,
        lora_dropout=0.0,
        bias="none",
        target_modules=list(options.targets),
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, config)
    encoded = [_encode(tokenizer, lesson) for lesson in lessons]
    usable = [pair for pair in encoded if len(pair[0]) <= options.max_tokens]
    order = _order(len(usable), options)
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=options.learning_rate, weight_decay=0.0
    )
    checkpoint = work / CHECKPOINT
    fingerprint = _fingerprint(lessons, options)
    step = _resume(checkpoint, fingerprint, model, optimizer, set_peft_model_state_dict, load_file, torch)
    result = TrainResult(
        work / "adapter",
        steps=step,
        planned=len(order),
        seconds=0.0,
        peak_memory_mb=0.0,
        device=device,
        ended="done",
        resumed_from=step,
        left_out_too_long=len(encoded) - len(usable),
        learning_rate=options.learning_rate,
    )
    model.train()
    limit = options.max_minutes * 60
    step_seconds: list[float] = []
    try:
        while step < len(order):
            mean = sum(step_seconds) / len(step_seconds) if step_seconds else 0.0
            if time.perf_counter() - started + mean > limit:
                result.ended = "time_limit"
                break
            tick = time.perf_counter()
            ids, labels = usable[order[step]]
            inputs = torch.tensor([ids], device=device)
            targets = torch.tensor([labels], device=device)
            loss = model(input_ids=inputs, labels=targets).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            step += 1
            step_seconds.append(time.perf_counter() - tick)
            result.losses.append(float(loss.item()))
            eta = (len(order) - step) * sum(step_seconds[-20:]) / len(step_seconds[-20:])
            report(
                Progress(
                    "training the adapter",
                    step,
                    len(order),
                    note=f"loss {result.losses[-1]:.3f}, about {_minutes(eta)} left",
                )
            )
            if step % options.save_every == 0:
                _save(checkpoint, fingerprint, step, model, optimizer, torch)
    except KeyboardInterrupt:
        result.ended = "interrupted"
    _save(checkpoint, fingerprint, step, model, optimizer, torch)
    model.save_pretrained(str(result.adapter_dir))
    result.steps = step
    result.seconds = round(time.perf_counter() - started, 1)
    result.peak_memory_mb = round(peak_memory_mb(), 1)
    return result


def _encode(tokenizer: Any, lesson: Lesson) -> tuple[list[int], list[int]]:
    """A lesson's token ids and labels: the prompt in the chat template (masked out of the
    loss) and the reply with its end-of-turn mark."""
    prompt = tokenizer.apply_chat_template(lesson.messages, add_generation_prompt=True, tokenize=False)
    whole = tokenizer.apply_chat_template(lesson.chat(), tokenize=False)
    reply = whole[len(prompt) :] if whole.startswith(prompt) else lesson.target
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    reply_ids = tokenizer(reply.rstrip("\n"), add_special_tokens=False)["input_ids"]
    return prompt_ids + reply_ids, [-100] * len(prompt_ids) + reply_ids


def _order(count: int, options: TrainOptions) -> list[int]:
    """Which lesson each step trains on: each pass shuffled by the seed, capped at max_steps."""
    order: list[int] = []
    shuffle = random.Random(options.seed)
    for _ in range(options.epochs):
        one = list(range(count))
        shuffle.shuffle(one)
        order.extend(one)
    return order[: options.max_steps]


def _fingerprint(lessons: Sequence[Lesson], options: TrainOptions) -> str:
    """What a checkpoint must match to be resumed: the lessons and every option but the
    time limit."""
    data = [lesson.to_json() for lesson in lessons]
    settings = {k: v for k, v in asdict(options).items() if k != "max_minutes"}
    text = json.dumps([data, settings], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _save(checkpoint: Path, fingerprint: str, step: int, model: Any, optimizer: Any, torch: Any) -> None:
    """Write the checkpoint beside the old one, then swap it in (never half a checkpoint)."""
    fresh = checkpoint.with_name(checkpoint.name + ".new")
    model.save_pretrained(str(fresh))
    torch.save(optimizer.state_dict(), fresh / "optimizer.pt")
    (fresh / "state.json").write_text(
        json.dumps({"step": step, "fingerprint": fingerprint}), encoding="utf-8"
    )
    old = checkpoint.with_name(checkpoint.name + ".old")
    if checkpoint.exists():
        checkpoint.rename(old)
    fresh.rename(checkpoint)
    if old.exists():
        import shutil

        shutil.rmtree(old)


def _resume(
    checkpoint: Path, fingerprint: str, model: Any, optimizer: Any, set_state: Any, load_file: Any, torch: Any
) -> int:
    """The step a matching checkpoint reached (its weights and optimizer loaded), else 0."""
    state_file = checkpoint / "state.json"
    if not state_file.is_file():
        return 0
    state = json.loads(state_file.read_text(encoding="utf-8"))
    if state.get("fingerprint") != fingerprint:
        return 0
    set_state(model, load_file(str(checkpoint / "adapter_model.safetensors")))
    optimizer.load_state_dict(torch.load(checkpoint / "optimizer.pt"))
    return int(state["step"])


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{math.ceil(seconds / 60)} min"
