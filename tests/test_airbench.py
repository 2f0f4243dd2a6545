"""The airbench model family and its training techniques, on tiny models and data."""
from __future__ import annotations

import copy
import dataclasses
import shutil

import pytest
import torch
from torch import nn

from stages.models import Airbench, build_model
from stages.optimizers import set_lr
from stages.params import parse_params
from stages.trainer import fit, frozen_in, make_trainer, train_epoch, warm_up
from stages.whitening import init_whitening
from tests.conftest import params_dict


def tiny(**dotted):
    """The cpu recipe shrunk to widths 8-16-16 and batch 16, with dotted train.* overrides."""
    return parse_params(params_dict(**{"train.recipe": "cpu", "train.model.widths": [8, 16, 16],
                                       "train.optim.batch_size": 16, "train.numerics.precision": "fp32",
                                       **dotted})).train


def data(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"images": torch.randn(n, 3, 32, 32, generator=g), "labels": torch.randint(0, 10, (n,), generator=g)}


def built(p, images):
    torch.manual_seed(p.numerics.seed)
    model = build_model(p.model, 10)
    init_whitening(model.whiten, images, p.model.whiten_eps)
    return model


@pytest.mark.parametrize("activation, kind", [("gelu", nn.GELU), ("celu", nn.CELU), ("relu", nn.ReLU)])
def test_forward_shapes_activation_and_frozen_bn(activation, kind):
    p = tiny(**{"train.model.activation": activation, "train.model.bn_momentum": 0.4})
    model = build_model(p.model, 10)
    out = model(torch.randn(4, 3, 32, 32))
    assert out.shape == (4, 10) and torch.isfinite(out).all()
    assert isinstance(model.act, kind)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == 6 and all(not m.weight.requires_grad and m.eps == 1e-12 and m.momentum == 0.4
                                   for m in norms)


def test_dirac_init_makes_the_first_filters_identity_maps():
    model = build_model(tiny().model, 10)
    conv = model.groups[1].conv2  # 16 -> 16
    x = torch.randn(2, 16, 7, 7)
    assert torch.allclose(conv(x), x, atol=1e-6)
    conv1 = model.groups[1].conv1  # 8 -> 16: the first 8 outputs copy the input
    assert torch.allclose(conv1(torch.randn(2, 8, 5, 5) * 0 + 1)[:, :8], torch.ones(2, 8, 5, 5), atol=1e-6)
    plain = build_model(tiny(**{"train.model.dirac_init": False}).model, 10)
    assert not torch.allclose(plain.groups[1].conv2(x), x, atol=1e-2)


def test_output_scale_multiplies_the_logits():
    torch.manual_seed(0)
    a = build_model(tiny().model, 10)
    torch.manual_seed(0)
    b = build_model(tiny(**{"train.model.output_scale": 0.5}).model, 10)
    x = torch.randn(2, 3, 32, 32)
    a.eval(), b.eval()
    assert torch.allclose(b(x), a(x) * 0.5 / 0.1111, atol=1e-5)


def test_whitening_bias_trains_only_in_its_epochs_and_filters_never():
    p = tiny(**{"train.optim.whiten_bias_epochs": 1, "train.average.lookahead": 0.0})
    d = data()
    model = built(p, d["images"])
    t = make_trainer(p, model, 4, 64)
    weight, g = model.whiten.weight.detach().clone(), torch.Generator().manual_seed(0)
    bias0 = model.whiten.bias.detach().clone()
    train_epoch(t, d["images"], d["labels"], 16, g, epoch=1)
    bias1 = model.whiten.bias.detach().clone()
    train_epoch(t, d["images"], d["labels"], 16, g, epoch=2, first_step=4)
    assert not torch.equal(bias0, bias1)
    assert torch.equal(bias1, model.whiten.bias)
    assert torch.equal(weight, model.whiten.weight)


class Wrapped(nn.Module):
    """Stands in for a torch.compile or DDP wrapper: runs the model it holds."""

    def __init__(self, model):
        super().__init__()
        self.inner = model

    def forward(self, x):
        return self.inner(x)


@pytest.mark.parametrize("wrapped", [False, True])
def test_a_frozen_whitening_bias_spares_backward_the_first_conv_s_input_gradient_when_eager(wrapped):
    p = tiny(**{"train.optim.whiten_bias_epochs": 1, "train.average.lookahead": 0.0})
    d = data()
    model = built(p, d["images"])
    t = make_trainer(p, model, 4, 64, forward=Wrapped(model) if wrapped else None)
    seen = []  # per step: does the whitening conv's output carry a gradient?
    model.whiten.register_forward_hook(lambda _m, _i, out: seen.append(out.requires_grad))
    g = torch.Generator().manual_seed(0)
    train_epoch(t, d["images"], d["labels"], 16, g, epoch=1)
    bias1 = model.whiten.bias.detach().clone()
    train_epoch(t, d["images"], d["labels"], 16, g, epoch=2, first_step=4)
    assert seen[:4] == [True] * 4
    # eager: no graph through the whitening conv, as airbench's requires_grad; a wrapper keeps the graph
    # (its grad is dropped after backward instead), so that a compiled graph or DDP stays valid
    assert seen[4:] == [wrapped] * 4
    assert torch.equal(bias1, model.whiten.bias) and model.whiten.bias.grad is None


@pytest.mark.parametrize("wrapped", [False, True])
def test_freeze_last_stops_each_group_in_its_last_epochs_and_backward_before_it_when_eager(wrapped):
    p = tiny(**{"train.optim.whiten_bias_epochs": 0, "train.average.lookahead": 0.0, "train.optim.epochs": 3,
                "train.optim.freeze_last": [2, 1]})
    d = data()
    model = built(p, d["images"])
    t = make_trainer(p, model, 4, 64, forward=Wrapped(model) if wrapped else None)
    seen = {1: [], 2: []}  # per step: does the second (third) group's input carry a gradient?
    for k in seen:
        model.groups[k].register_forward_pre_hook(lambda _m, args, k=k: seen[k].append(args[0].requires_grad))
    g = torch.Generator().manual_seed(0)
    states = [copy.deepcopy(model.groups.state_dict())]
    for epoch in (1, 2, 3):
        train_epoch(t, d["images"], d["labels"], 16, g, epoch=epoch, first_step=4 * (epoch - 1))
        states.append(copy.deepcopy(model.groups.state_dict()))

    def moved(group, epoch, kind="conv1.weight"):
        key = f"{group}.{kind}"
        return not torch.equal(states[epoch - 1][key], states[epoch][key])

    assert moved(0, 1) and moved(1, 1) and moved(2, 1)
    assert not moved(0, 2) and not moved(0, 2, "norm1.bias") and moved(1, 2) and moved(2, 2)  # the first: last 2
    assert not moved(0, 3) and not moved(1, 3) and moved(2, 3)  # the second: the last one
    assert moved(0, 3, "norm1.running_mean")  # frozen groups still run in train mode: BatchNorm keeps tracking
    # eager: no graph below a frozen group; a wrapper keeps it (grads dropped after backward instead)
    assert seen == {1: [True] * 4 + [wrapped] * 8, 2: [True] * 8 + [wrapped] * 4}
    assert all(q.grad is None for q in model.groups[:2].parameters())


def test_freeze_anneal_runs_each_freezing_group_through_the_whole_schedule_before_it_freezes():
    p = tiny(**{"train.optim.epochs": 4, "train.optim.freeze_last": [2, 1], "train.optim.freeze_anneal": True,
                "train.optim.schedule": "linear", "train.optim.warmup": 0.25, "train.optim.warmup_from": 0.2,
                "train.optim.decay_to": 0.1})
    d = data()
    model = built(p, d["images"])
    t = make_trainer(p, model, 4, 64)  # 4 steps an epoch: the run 16, the first group 8, the second 12
    lrs = {}  # factor of its peak lr for each conv group and the head, per step
    for step in range(16):
        for name, params in (("first", model.groups[0].parameters()), ("second", model.groups[1].parameters()),
                             ("head", model.head.parameters())):
            ids = {id(q) for q in params if q.ndim > 1}  # its filters (BatchNorm biases: a group beside them)
            group = next(g for g in t.optimizers[0].param_groups if ids & {id(q) for q in g["params"]})
            lrs.setdefault(name, []).append(group["lr"] / group["peak_lr"])
        set_lr(t.optimizers, t.lr_at, step + 1)
    assert lrs["head"][0] == pytest.approx(0.4) and lrs["head"][3] == pytest.approx(1.0)  # warm-up: 4 of 16
    assert lrs["head"][15] == pytest.approx(1 - 0.9 * 11 / 12)  # the run's: linear toward 0.1
    # the first group trains 8 steps at twice the pace, the second 12 at 4/3: each through the whole schedule
    assert lrs["first"][:8] == [pytest.approx(lrs["head"][2 * k]) for k in range(8)]
    assert [lrs["second"][k] for k in (0, 3, 6, 9)] == [pytest.approx(lrs["head"][k]) for k in (0, 4, 8, 12)]
    assert lrs["first"][7] < lrs["head"][7] / 2  # near decay_to where the run is still at 0.78
    assert lrs["first"][8:] == [pytest.approx(0.1)] * 8  # then decay_to, as it is frozen
    plain = make_trainer(tiny(**{"train.optim.epochs": 4, "train.optim.freeze_last": [2, 1]}),
                         built(p, d["images"]), 4, 64)
    assert all("schedule_scale" not in g for g in plain.optimizers[0].param_groups)  # false: the run's, cut off


def test_the_plan_counted_before_training_freezes_what_training_freezes():
    """stages.train counts each epoch's FLOPs from frozen_in before the trainer exists."""
    p = tiny(**{"train.optim.epochs": 4, "train.optim.whiten_bias_epochs": 1, "train.optim.freeze_last": [2, 1]})
    d = data(32)
    model = built(p, d["images"])
    planned = {epoch: {id(q) for q in frozen_in(model, p, epoch)} for epoch in (1, 2, 3, 4)}
    t = make_trainer(p, model, 2, 32)
    g = torch.Generator().manual_seed(0)
    trained = {id(q) for q in model.parameters() if q.requires_grad}
    for epoch in (1, 2, 3, 4):
        train_epoch(t, d["images"], d["labels"], 16, g, epoch=epoch)
        assert planned[epoch] == trained - {id(q) for q in model.parameters() if q.requires_grad}
    assert planned[1] == set() and id(model.whiten.bias) in planned[2]
    second = {id(q) for q in model.groups[1].parameters()} & trained
    assert second and second == planned[4] - planned[3]  # the second group: the last epoch only


def test_warm_up_runs_each_shape_the_epochs_will_and_leaves_the_model_as_it_was():
    """A compiled model pays its compile for early_crop's windows there, not inside the first epoch."""
    p = tiny(**{"train.augment.early_crop": 24, "train.augment.early_crop_epochs": 1})
    d = data(32)
    model = built(p, d["images"])
    shapes = []
    model.register_forward_pre_hook(lambda _m, args: shapes.append(tuple(args[0].shape)))
    t = make_trainer(p, model, 2, 32, forward=Wrapped(model))
    before = copy.deepcopy(model.state_dict())
    warm_up(t, d["images"], d["labels"], 16)
    assert shapes == [(16, 3, 32, 32), (16, 3, 24, 24)]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(q.grad is None for q in model.parameters())
    whole, shapes[:] = built(tiny(), d["images"]), []
    whole.register_forward_pre_hook(lambda _m, args: shapes.append(tuple(args[0].shape)))
    warm_up(make_trainer(tiny(), whole, 2, 32), d["images"], d["labels"], 16)
    assert shapes == [(16, 3, 32, 32)]  # without early_crop: whole images only


def test_frozen_groups_train_again_from_an_earlier_epoch():
    p = tiny(**{"train.optim.epochs": 3, "train.optim.freeze_last": [1]})
    d = data(32)
    model = built(p, d["images"])
    t = make_trainer(p, model, 2, 32)
    g = torch.Generator().manual_seed(0)
    train_epoch(t, d["images"], d["labels"], 16, g, epoch=3)
    assert not model.groups[0].conv1.weight.requires_grad and model.groups[1].conv1.weight.requires_grad
    train_epoch(t, d["images"], d["labels"], 16, g, epoch=1)  # profile_step's alternation, or a resumed run
    assert model.groups[0].conv1.weight.requires_grad and not model.groups[0].norm1.weight.requires_grad


def test_bf16_autocast_keeps_batchnorm_in_fp32():
    p = tiny(**{"train.numerics.precision": "bf16"})
    d = data(32)
    model = built(p, d["images"])
    train_epoch(make_trainer(p, model, 2, 32), d["images"], d["labels"], 16, torch.Generator().manual_seed(0))
    norm = model.groups[0].norm1
    assert norm.running_mean.dtype == norm.bias.dtype == torch.float32
    assert torch.isfinite(norm.running_mean).all()


def run(p, d, checkpoint=None, stop_after=None):
    """fit() on a fresh model; with stop_after, copy the checkpoint of that epoch aside (a kill -9 then)."""
    model = built(p, d["images"])
    t = make_trainer(p, model, 4, len(d["labels"]))
    saved = {}

    def on_epoch(history):
        if stop_after and len(history) == stop_after and checkpoint:
            shutil.copy(checkpoint, checkpoint.with_suffix(".killed"))
            saved["done"] = True

    fit(t, d, {"images": d["images"][:0], "labels": d["labels"][:0]}, p, checkpoint, {"id": 1}, on_epoch=on_epoch)
    return t.final


def test_resume_with_lookahead_and_alternate_flips_gives_the_uninterrupted_weights(tmp_path):
    p = tiny(**{"train.optim.epochs": 3, "train.average.lookahead_every": 2})
    assert p.average.lookahead > 0 and p.augment.flip == "alternate"
    d = data()
    ckpt = tmp_path / "ckpt.pt"
    straight = run(p, d, ckpt, stop_after=1)
    again = run(p, d)  # no checkpoint: the same run twice is bit-identical on the CPU
    assert all(torch.equal(a, b) for a, b in zip(straight.state_dict().values(), again.state_dict().values()))
    shutil.copy(ckpt.with_suffix(".killed"), ckpt)  # as if killed after epoch 1
    resumed = run(p, d, ckpt)
    assert all(torch.equal(a, b) for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()))


def test_lookahead_changes_the_result_and_the_saved_model_is_the_slow_copy():
    d = data()
    with_la = run(tiny(**{"train.optim.epochs": 2}), d)
    without = run(tiny(**{"train.optim.epochs": 2, "train.average.lookahead": 0.0}), d)
    assert not torch.equal(with_la.head.weight, without.head.weight)


def _ddp_rank(rank: int, world: int, init: str, out: str) -> None:
    import torch.distributed as torch_dist
    from torch.nn.parallel import DistributedDataParallel

    from stages.distributed import Dist

    torch.set_num_threads(1)  # two ranks on a 2-core CI machine: more threads only fight (78 s against 13 s)
    torch_dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    p = tiny(**{"train.average.lookahead_every": 1, "train.optim.epochs": 2})
    d = data()
    model = built(p, d["images"])
    t = make_trainer(p, model, 4, 64, forward=DistributedDataParallel(model))
    fit(t, d, {"images": d["images"][:0], "labels": d["labels"][:0]}, p, dist=Dist(rank, world))
    torch.save({"model": model.state_dict(), "slow": t.lookahead.state_dict()}, f"{out}/rank{rank}.pt")
    torch_dist.destroy_process_group()


@pytest.mark.e2e  # two spawned rank processes
def test_ddp_ranks_keep_lookahead_weights_in_sync(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_ddp_rank, args=(2, f"file://{tmp_path}/rendezvous", str(tmp_path)), nprocs=2, join=True)
    a, b = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for part in ("model", "slow"):
        assert a[part].keys() == b[part].keys()
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part]), part
    assert not torch.equal(a["model"]["head.weight"], built(tiny(), data()["images"]).head.weight)  # it trained


def test_profile_step_times_two_epochs_of_one_run_alternately(capsys):
    from benchmarks.profile_step import compare_epochs

    p = tiny(**{"train.optim.whiten_bias_epochs": 1, "train.average.lookahead": 0.0})
    d = data(32)
    model = built(p, d["images"])
    medians = compare_epochs(make_trainer(p, model, 16, 32), d["images"], d["labels"], 16,
                             torch.Generator().manual_seed(0), [1, 2], rounds=2)
    assert sorted(medians) == [1, 2] and all(m > 0 for m in medians.values())
    out = capsys.readouterr().out
    assert "over 2 passes of 2 steps" in out and "epoch 2 against epoch 1:" in out
    assert model.whiten.bias.requires_grad  # round 2 ran epoch 2, then 1: the order swaps every round


def test_early_crop_trains_the_first_epochs_on_windows_and_the_rest_on_whole_images():
    p = tiny(**{"train.augment.early_crop": 24, "train.augment.early_crop_epochs": 2, "train.optim.epochs": 3})
    d = data()
    model = built(p, d["images"])
    t = make_trainer(p, model, 4, 64)
    sizes = []
    model.register_forward_pre_hook(lambda m, args: sizes.append(tuple(args[0].shape[-2:])))
    generator = torch.Generator().manual_seed(0)
    for epoch in (1, 2, 3):
        sizes.append(epoch)
        loss, _ = train_epoch(t, d["images"], d["labels"], 16, generator, epoch)
        assert loss == loss  # finite: the last max-pool took the smaller maps
    assert sizes == [1, *[(24, 24)] * 4, 2, *[(24, 24)] * 4, 3, *[(32, 32)] * 4]


@pytest.mark.parametrize("size, last_map", [(32, 3), (24, 2), (9, 1)])
def test_the_last_max_pool_takes_the_whole_last_map_at_any_size(size, last_map):
    model = build_model(tiny().model, 10).eval()
    x = torch.randn(2, 3, size, size)
    features = model.groups(model.act(model.whiten(x)))
    assert features.shape[-2:] == (last_map, last_map)
    expected = model.head(features.amax((2, 3))) * model.output_scale
    assert torch.allclose(model(x), expected)
