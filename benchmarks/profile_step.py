"""Where the time of one training step goes, for a recipe's model and batch size (default: tutorial).

Times N optimizer steps of the train stage's own loop (stages.trainer.train_epoch on
random data of CIFAR-10 shape, the model set up as the train stage sets it up) and
profiles them with torch.profiler, then prints the operators by self time and the
share that is not matrix math or the optimizer's update (Python, autograd and
dispatcher overhead).

--epochs A B times the steps of epoch A and of epoch B of the run (1-based) instead, alternately in
one process, `--rounds` times each, and prints the median of each: for what changes from one epoch
to another, such as the airbench whitening bias, which trains in epochs 1..whiten_bias_epochs only.

    python benchmarks/profile_step.py [--recipe tutorial] [--steps 1000] [--no-profile] \
        [--set train.numerics.precision=bf16] [--epochs 1 4 --rounds 8]
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import torch
import yaml
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.runner import ROOT, machine, parse_set  # noqa: E402
from stages import trainer  # noqa: E402
from stages.models import Airbench, build_model  # noqa: E402
from stages.params import parse_params, set_dotted  # noqa: E402
from stages.precision import choose_precision  # noqa: E402
from stages.whitening import init_whitening  # noqa: E402

MATH = ("aten::mm", "aten::addmm", "aten::convolution", "aten::mkldnn_convolution", "aten::_convolution",
        "aten::convolution_backward", "aten::native_batch_norm", "aten::native_batch_norm_backward")
UPDATE = ("aten::add_", "aten::_foreach_add_", "aten::mul_", "aten::addcmul_", "aten::_fused_sgd_")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="tutorial")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--set", action="append", default=[], help="extra params override KEY=VALUE")
    ap.add_argument("--no-profile", action="store_true", help="only time the steps")
    ap.add_argument("--epochs", type=int, nargs=2, metavar=("A", "B"),
                    help="time epoch A's steps against epoch B's, alternately (no profile)")
    ap.add_argument("--rounds", type=int, default=8, help="with --epochs: timed passes of each")
    args = ap.parse_args()
    if args.epochs and args.rounds < 1:
        ap.error(f"--rounds {args.rounds}: expected 1 or more timed passes of each epoch")
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    p = parse_params(set_dotted(raw, {"train.recipe": args.recipe, "train.numerics.device": "cpu",
                                      **parse_set(args.set)})).train
    precision, why = choose_precision(p.numerics.precision, "cpu")
    p = dataclasses.replace(p, numerics=dataclasses.replace(p.numerics, precision=precision))
    print(f"precision {precision}: {why}")
    torch.manual_seed(0)
    batch = p.optim.batch_size
    n = args.steps * batch
    images, labels = torch.randn(n, 3, 32, 32), torch.randint(0, 10, (n,))
    # The model as stages.train.train_on sets it up: whitening, layout, compile.
    model = build_model(p.model, 10)
    if isinstance(model, Airbench) and p.model.whiten:
        init_whitening(model.whiten, images, p.model.whiten_eps)
    if p.numerics.channels_last:
        model.to(memory_format=torch.channels_last)
    forward = torch.compile(model) if p.numerics.compile else model
    generator = torch.Generator().manual_seed(0)
    # Warm-up (kernels, allocator, compile) on up to 20 batches, by a trainer of its own: alternate flips and
    # the lr schedule are set up for the images an epoch goes over.
    warm = min(20, args.steps) * batch
    trainer.train_epoch(trainer.make_trainer(p, model, warm // batch, warm, forward), images[:warm], labels[:warm],
                        batch, generator)
    if args.epochs:
        # a schedule as long as the passes below, so that the lr stays in its range throughout
        t = trainer.make_trainer(p, model, args.steps * 2 * args.rounds, n, forward)
        compare_epochs(t, images, labels, batch, generator, args.epochs, args.rounds)
        print(f"{args.recipe} {parse_set(args.set)}: batch {batch}, precision {p.numerics.precision}, "
              f"on {machine()}")
        return
    t = trainer.make_trainer(p, model, args.steps, n, forward)

    start = time.perf_counter()
    trainer.train_epoch(t, images, labels, batch, generator)
    per_step = (time.perf_counter() - start) / args.steps
    print(f"{args.recipe} {parse_set(args.set)}: {per_step * 1e3:.2f} ms/step at batch {batch} "
          f"({batch / per_step:.0f} img/s, {50000 / batch * per_step:.0f} s per 50,000-image epoch), "
          f"precision {p.numerics.precision}, on {machine()}", flush=True)
    if args.no_profile:
        return
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        trainer.train_epoch(t, images, labels, batch, generator)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    math_us = sum(e.self_cpu_time_total for e in events if e.key in MATH)
    update_us = sum(e.self_cpu_time_total for e in events if e.key in UPDATE)
    print(events.table(sort_by="self_cpu_time_total", row_limit=12))
    print(f"profiled self time: matrix math {math_us / total:.0%}, optimizer update {update_us / total:.0%}, "
          f"everything else (Python, autograd, dispatch, small ops) {1 - (math_us + update_us) / total:.0%}")


def compare_epochs(t: trainer.Trainer, images: torch.Tensor, labels: torch.Tensor, batch: int,
                   generator: torch.Generator, epochs: list[int], rounds: int) -> dict[int, float]:
    """Median ms per step of each of `epochs`, timed alternately (the order swapped every round); printed."""
    times: dict[int, list[float]] = {e: [] for e in epochs}
    steps = -(-len(labels) // batch)
    for round_ in range(rounds):
        for epoch in (epochs if round_ % 2 == 0 else epochs[::-1]):
            start = time.perf_counter()
            trainer.train_epoch(t, images, labels, batch, generator, epoch=epoch)
            times[epoch].append((time.perf_counter() - start) / steps * 1e3)
    medians = {e: statistics.median(v) for e, v in times.items()}
    for epoch, median in medians.items():
        print(f"epoch {epoch}: median {median:.1f} ms/step over {rounds} passes of {steps} steps "
              f"({', '.join(f'{v:.0f}' for v in times[epoch])})")
    first, second = epochs
    print(f"epoch {second} against epoch {first}: {medians[second] / medians[first]:.3f}x")
    return medians


if __name__ == "__main__":
    main()
