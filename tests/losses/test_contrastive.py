"""Contrastive losses: single-process references, and 2 gloo ranks equal to one process on the whole batch."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from sfclip.losses import ContrastiveLoss, clip_loss, siglip_loss


def reference_clip(img, txt, scale):
    logits = scale * img @ txt.T
    labels = torch.arange(img.shape[0])
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def features(seed, n=8, d=6):
    g = torch.Generator().manual_seed(seed)
    img = F.normalize(torch.randn(n, d, generator=g, dtype=torch.double), dim=-1)
    txt = F.normalize(torch.randn(n, d, generator=g, dtype=torch.double), dim=-1)
    return img, txt


def test_clip_loss_single_process():
    img, txt = features(0)
    scale = torch.tensor(10.0, dtype=torch.double)
    torch.testing.assert_close(clip_loss(img, txt, scale), reference_clip(img, txt, scale))
    perfect = torch.eye(8, dtype=torch.double)
    assert clip_loss(perfect, perfect, torch.tensor(100.0, dtype=torch.double)) < 1e-6


def test_siglip_loss_single_process():
    img, txt = features(1)
    scale, bias = torch.tensor(10.0, dtype=torch.double), torch.tensor(-5.0, dtype=torch.double)
    logits = scale * img @ txt.T + bias
    labels = 2 * torch.eye(8, dtype=torch.double) - 1
    ref = -F.logsigmoid(labels * logits).sum() / 8
    torch.testing.assert_close(siglip_loss(img, txt, scale, bias), ref)


def test_no_clamp_inside_the_loss_so_a_large_temperature_can_come_back():
    # The train loop clamps the parameter after the step (OpenCLIP); a clamp in the loss would give a
    # zero gradient above log(100), and the temperature could never decrease again.
    img, txt = features(2)
    log_scale = torch.tensor(5.0, dtype=torch.double, requires_grad=True)  # exp(5) = 148 > 100
    loss = ContrastiveLoss("clip")(img, txt, log_scale)
    torch.testing.assert_close(loss, reference_clip(img, txt, log_scale.detach().exp()))
    loss.backward()
    assert log_scale.grad is not None and log_scale.grad.abs() > 1e-6


def _rank_worker(rank, world, init_file, kind, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    img, txt = features(0)
    b = img.shape[0] // world
    li = img[rank * b:(rank + 1) * b].clone().requires_grad_(True)
    lt = txt[rank * b:(rank + 1) * b].clone().requires_grad_(True)
    log_scale = torch.tensor(2.3, dtype=torch.double, requires_grad=True)
    bias = torch.tensor(-4.0, dtype=torch.double, requires_grad=True)
    loss = ContrastiveLoss(kind)(li, lt, log_scale, bias)
    loss.backward()
    torch.save({"loss": loss.detach(), "gi": li.grad, "gt": lt.grad, "gs": log_scale.grad,
                "gb": bias.grad}, os.path.join(out_dir, f"{rank}.pt"))
    dist.destroy_process_group()


@pytest.mark.dist
@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_two_gloo_ranks_equal_single_process(tmp_path, kind):
    world = 2
    mp.spawn(_rank_worker, args=(world, str(tmp_path / "init"), kind, str(tmp_path)), nprocs=world, join=True)
    res = [torch.load(tmp_path / f"{r}.pt") for r in range(world)]

    img, txt = features(0)
    img.requires_grad_(True)
    txt.requires_grad_(True)
    log_scale = torch.tensor(2.3, dtype=torch.double, requires_grad=True)
    bias = torch.tensor(-4.0, dtype=torch.double, requires_grad=True)
    single = ContrastiveLoss(kind)(img, txt, log_scale, bias)
    single.backward()

    # DDP averages rank losses and parameter gradients: the mean over ranks equals the single process.
    torch.testing.assert_close(torch.stack([r["loss"] for r in res]).mean(), single.detach())
    torch.testing.assert_close(torch.stack([r["gs"] for r in res]).mean(), log_scale.grad)
    if kind == "siglip":
        torch.testing.assert_close(torch.stack([r["gb"] for r in res]).mean(), bias.grad)
    # Feature gradients reach each rank through the all-gather: rank r's rows carry W x the single-process
    # gradient, which DDP's 1/W averaging turns into exactly the single-process parameter gradient.
    b = img.shape[0] // world
    for r in range(world):
        torch.testing.assert_close(res[r]["gi"] / world, img.grad[r * b:(r + 1) * b])
        torch.testing.assert_close(res[r]["gt"] / world, txt.grad[r * b:(r + 1) * b])
