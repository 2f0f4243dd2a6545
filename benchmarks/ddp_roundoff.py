"""How far two ranks may drift from one process by rounding alone, against what real faults do.

The DDP test (tests/test_distributed.py) trains the tutorial MLP once in one process and once
in two gloo ranks and compares the weights. The math is the same, the rounding is not: each
rank sums its half of the batch, and the CPU's kernels (AVX2 or AVX512) choose how. This
script emulates both in one process, on the test's own tiny archive and settings, and prints
for each way of splitting every batch of 8:

- the largest weight difference to one process, and the difference's norm as a fraction of
  the training update |w_end - w_start| (what the test bounds);
- the first step where a ReLU's sign differs between the two runs, with how close to 0 its
  input was: where rounding flips one, the runs part by about lr x that image's gradient;
- the same figures for faults the test must catch: every rank on the same shard, gradients
  summed instead of averaged, no all-reduce (rank 0's half alone), a shuffle per rank.

    python benchmarks/ddp_roundoff.py [--lr 0.01 0.001] [--momentum 0.9] [--seeds 0 1]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.runner import machine  # noqa: E402
from stages.models import MLP  # noqa: E402
from stages.prepared import normalize  # noqa: E402
from tests.cifar_archive import official_members, write_archive  # noqa: E402
from tests.conftest import prepare_archive  # noqa: E402

BATCH = 8
# name -> the (images, labels, weight of that part's mean loss) each rank trains on, from one
# batch of 8 (x, y) and the batch a second shuffle would have drawn at the same step (xo, yo).
SPLITS = {
    "one process": lambda x, y, xo, yo: [(x, y, 1.0)],
    "2 ranks, 4+4": lambda x, y, xo, yo: [(x[:4], y[:4], 0.5), (x[4:], y[4:], 0.5)],
    "rounding only, 3+5": lambda x, y, xo, yo: [(x[:3], y[:3], 3 / 8), (x[3:], y[3:], 5 / 8)],
    "fault: same shard": lambda x, y, xo, yo: [(x[:4], y[:4], 0.5), (x[:4], y[:4], 0.5)],
    "fault: summed": lambda x, y, xo, yo: [(x[:4], y[:4], 1.0), (x[4:], y[4:], 1.0)],
    "fault: no all-reduce": lambda x, y, xo, yo: [(x[:4], y[:4], 1.0)],
    "fault: shuffle per rank": lambda x, y, xo, yo: [(x[:4], y[:4], 0.5), (xo[4:], yo[4:], 0.5)],
}


def tiny_data(root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The DDP test's data: the suite's 200-image archive through the real stages, 40 held out."""
    archive = root / "cifar-10-python.tar.gz"
    md5 = write_archive(archive, official_members(train_per_class=20, test_per_class=5))
    train = torch.load(prepare_archive(root, archive, md5, val_size=40) / "train.pt", weights_only=True)
    return normalize(train["images"], train["mean"], train["std"]), train["labels"]


def record_relu_inputs(model: MLP) -> dict[int, list[torch.Tensor]]:
    """Hook every ReLU; the returned dict gathers, per ReLU, each input (rows, units) as the
    training forward computes it: each rank's part of the batch apart, in its own matrix product."""
    seen: dict[int, list[torch.Tensor]] = {}
    for i, layer in enumerate(model.linear_relu_stack):
        if isinstance(layer, torch.nn.ReLU):
            layer.register_forward_hook(lambda mod, args, out, i=i: seen.setdefault(i, []).append(args[0].detach()))
    return seen


def train(images, labels, split: str, lr: float, momentum: float, seed: int, epochs: int = 2):
    """(start weights, end weights, (sign, |input|) of every ReLU per step) of SGD with batches split as `split` says."""
    torch.manual_seed(seed)
    model = MLP()
    inputs = record_relu_inputs(model)
    start = torch.cat([p.detach().flatten() for p in model.parameters()])
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    gen = torch.Generator().manual_seed(0)
    different_shuffle = torch.Generator().manual_seed(100)
    signs = []
    for _ in range(epochs):
        order = torch.randperm(len(labels), generator=gen)
        other = torch.randperm(len(labels), generator=different_shuffle)
        for s in range(0, len(labels), BATCH):
            x, y = images[order[s:s + BATCH]], labels[order[s:s + BATCH]]
            total = None
            # Each rank's mean loss, its gradient weighted as DDP's average weights it.
            for xp, yp, w in SPLITS[split](x, y, images[other[s:s + BATCH]], labels[other[s:s + BATCH]]):
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(model(xp), yp).backward()
                grads = [p.grad * w for p in model.parameters()]
                total = grads if total is None else [a + b for a, b in zip(total, grads)]
            for p, g in zip(model.parameters(), total):
                p.grad = g
            opt.step()
            pre = torch.cat([torch.cat(parts).flatten() for _, parts in sorted(inputs.items())])  # rows in batch order
            signs.append((pre > 0, pre.abs()))
            inputs.clear()
    return start, torch.cat([p.detach().flatten() for p in model.parameters()]), signs


def first_flip(a: list, b: list) -> str:
    for step, ((sa, _), (sb, mag)) in enumerate(zip(a, b), start=1):
        if (sa != sb).any():
            return f"step {step}, {(sa != sb).sum().item()} ReLU(s), |input| {mag[sa != sb].min().item():.1e}"
    return "none"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lr", type=float, nargs="+", default=[0.01, 0.001])
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = ap.parse_args(argv)
    torch.set_num_threads(1)  # as each rank of the test runs
    with tempfile.TemporaryDirectory() as tmp:
        images, labels = tiny_data(Path(tmp))
    print(f"{machine()}, 1 thread, fp32; batch {BATCH}, momentum {args.momentum}, 2 epochs\n")
    print("| lr | seed | run | largest weight difference | difference / update | first ReLU flip |")
    print("| --- | --- | --- | --- | --- | --- |")
    for lr in args.lr:
        for seed in args.seeds:
            start, one, signs = train(images, labels, "one process", lr, args.momentum, seed)
            update = (one - start).norm()
            for split in list(SPLITS)[1:]:
                _, end, other = train(images, labels, split, lr, args.momentum, seed)
                flip = "-" if split.startswith("fault") else first_flip(signs, other)  # faults see other images
                print(f"| {lr} | {seed} | {split} | {(one - end).abs().max():.1e} | {(one - end).norm() / update:.1e} "
                      f"| {flip} |", flush=True)


if __name__ == "__main__":
    main()
