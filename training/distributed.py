"""Training across processes: the process group, each rank's shard of a batch, and reductions of metrics.

Every stage runs unchanged on one process, and under `torchrun` (or `accelerate launch`) on N:

    torchrun --nproc_per_node 2 -m training dpo --policy ... --train pairs.jsonl --out ...

`setup()` joins the process group that the launcher describes in RANK, WORLD_SIZE and LOCAL_RANK
(gloo on the CPU, nccl on GPUs, one GPU per process) and is a no-op without them. The trained
models are wrapped in torch's DistributedDataParallel (`DataParallel`), which averages gradients
across processes during the backward pass. Each process takes its shard of every global batch
(`shard`), so the sum over processes is what one process computes on the whole batch; the stages
scale each process's loss so that DDP's average is the 1-process gradient:

    loss_r = sum of rank r's per-unit losses / units in the global batch * N

where a unit is a pair, a demonstration or a token, whichever the loss averages over (a token-
normalised loss needs the global token count, one all-reduce of a scalar before backward).
Only rank 0 writes checkpoints and prints metrics; metrics are summed over ranks first.

For models whose weights, gradients and AdamW state do not fit on one GPU, FSDP is the engine to
use instead of DDP: `torch.distributed.fsdp.fully_shard` on each decoder layer and then on the
model (FSDP2), with `MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)`,
shards parameters, gradients and optimiser state across ranks. With accelerate the same is
`accelerate launch --use_fsdp --fsdp_version 2 --fsdp_auto_wrap_policy TRANSFORMER_BASED_WRAP
--fsdp_transformer_layer_cls_to_wrap LlamaDecoderLayer -m training dpo ...`. It is not wired into
the stages here: the app's models (135M-1.7B) train comfortably under DDP on one GPU each.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

T = TypeVar("T")


@dataclass(frozen=True)
class Context:
    rank: int  # This process's index among all processes.
    world_size: int  # Processes taking part; 1 without a launcher.
    local_rank: int  # Index on this machine, which picks the GPU.

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched() -> bool:
    """Whether a launcher (torchrun, accelerate) started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup() -> Context:
    """Join the launcher's process group once (gloo on the CPU, nccl with CUDA); a no-op on one process."""
    if launched() and not dist.is_initialized():
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank)
        # The first collective can wait on the slowest rank's model loading, hence the generous timeout.
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo",
                                timeout=timedelta(minutes=30))
    return context()


def context() -> Context:
    """This process's place in the process group (rank 0 of 1 when there is none)."""
    if not dist.is_initialized():
        return Context(rank=0, world_size=1, local_rank=0)
    return Context(rank=dist.get_rank(), world_size=dist.get_world_size(),
                   local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def shard(items: Sequence[T], *, rank: int, world_size: int) -> list[T]:
    """Rank's contiguous share of `items`; shares differ by at most one item and, in rank order, are `items`."""
    base, extra = divmod(len(items), world_size)
    start = rank * base + min(rank, extra)
    return list(items[start : start + base + (1 if rank < extra else 0)])


def _collective_device() -> torch.device:
    """nccl only moves CUDA tensors; gloo moves CPU ones."""
    if dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """The element-wise sum of `values` over all ranks (the values themselves on one process), float64 on the CPU."""
    values = values.detach().to(torch.float64)
    if not dist.is_initialized():
        return values.cpu()
    total = values.to(_collective_device())
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total.cpu()


def sum_metrics(totals: dict[str, float]) -> dict[str, float]:
    """A dict of running sums (losses times counts, counts) summed over all ranks."""
    names = sorted(totals)
    summed = all_reduce_sum(torch.tensor([float(totals[name]) for name in names]))
    return {name: value.item() for name, value in zip(names, summed)}


def gather_objects(value: Any) -> list[Any]:
    """Every rank's `value`, in rank order (`[value]` on one process). Pickled, so keep it small and on the CPU."""
    if not dist.is_initialized():
        return [value]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


class _Models(torch.nn.Module):
    """The trained models under one module, so one DDP instance averages all their gradients.

    The stages' forward passes go through their own functions (packed, padding-free), not through
    the models' forward; DDP needs its forward to be where they run, so it calls the given closure.
    """

    def __init__(self, models: Sequence[torch.nn.Module]):
        super().__init__()
        self.models = torch.nn.ModuleList(models)

    def forward(self, compute):
        return compute()


class DataParallel:
    """The trained models, under DistributedDataParallel when there are several processes.

    Every forward pass that leads to a backward runs through `forward(compute)`; `sync=False` on all
    but the last forward-backward before an optimiser step keeps the gradients local until then
    (gradient accumulation). A rank with nothing to compute in a step still takes part in that step's
    gradient average through `idle_loss`, which contributes zeros.
    """

    def __init__(self, *models: torch.nn.Module):
        self.context = context()
        self.parameters = [p for model in models for p in model.parameters() if p.requires_grad]
        self._ddp = None
        if self.context.world_size > 1:
            # DDP broadcasts rank 0's parameters here, so every rank starts from the same weights.
            # No buffer sync before each forward: the buffers are rotary tables, the same on every rank.
            self._ddp = DistributedDataParallel(_Models(models), forward_sync_buffers=False)

    @property
    def world_size(self) -> int:
        return self.context.world_size

    @contextmanager
    def forward_backward(self, *, sync: bool):
        """The block holding one forward and its backward; `sync` on the last one before the optimiser step."""
        with self._ddp.no_sync() if self._ddp is not None and not sync else nullcontext():
            yield

    def forward(self, compute):
        return compute() if self._ddp is None else self._ddp(compute)

    def idle_loss(self) -> torch.Tensor:
        """A zero loss through every trained parameter, for a rank whose share of a step is empty.

        Run it through `forward` and call its backward where the other ranks call theirs: the rank
        then joins the step's gradient average with zeros, and its collectives stay in the others' order.
        """
        return sum(parameter.sum() for parameter in self.parameters) * 0.0
