#!/usr/bin/env python3
"""PyTorch reference for the Rust ResNet backbones (`crates/model/src/resnet.rs`): torchvision's
own `resnet18` / `resnet50` from the project virtualenv, with `fc = nn.Identity()` as the official
DINO `MultiCropWrapper` sets it.

Modes (safetensors written with the small writer of vit_reference.py):
  parity --arch resnet18|resnet34|resnet50 --out DIR [--cifar-stem] [--size 64] [--batch 4]
         DIR/init.safetensors     state dict right after `torch.manual_seed(seed); resnetNN()`
                                  (fc dropped), for init parity; torchvision stem only
         DIR/weights.safetensors  the weights the outputs below come from: BatchNorm weights, biases
                                  and running statistics moved away from 1/0, convs as initialised
         DIR/io.safetensors       input [B, 3, S, S]; eval [B, D] (eval mode); train [B, D] (train
                                  mode, batch statistics); after.<buffer> the BatchNorm buffers
                                  after that one train-mode forward (running mean/var,
                                  num_batches_tracked); grad.<param> and grad.input of
                                  loss = sum(train * w) / B for a fixed random w [B, D], computed
                                  in float64 (the same weights and input cast up): in float32 a
                                  train-mode ResNet-50's weight gradients at init are so
                                  ill-conditioned (BatchNorm's batch statistics) that torchvision
                                  itself differs by 10 % of a tensor's largest entry between 1 and
                                  2 threads, and by as much from its own float64 result
  checkpoints --out DIR          official DINO ResNet-50 checkpoints made with torchvision:
         DIR/backbone.pth         the released `dino_resnet50_pretrain.pth` layout (torchvision keys,
                                  no fc)
         DIR/torchvision.pth      a plain torchvision state dict, fc included
         DIR/full.pth             a training checkpoint: student (`module.backbone.`, `module.head.`,
                                  as saved from DDP), teacher (`backbone.`, `head.`), optimizer,
                                  epoch, args; heads are DINO heads with BatchNorm, out_dim 256
         DIR/io.safetensors       input, and the eval-mode features of backbone / student / teacher
                                  as torchvision computes them (feat.backbone, feat.student,
                                  feat.teacher), and the teacher's head logits (logits.teacher)

The CIFAR stem is torchvision's network with `conv1 = Conv2d(3, 64, 3, 1, 1, bias=False)` and
`maxpool = Identity()`.
"""
import argparse
import copy
import os
import sys

import torch
import torch.nn as nn
import torchvision

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vit_reference  # noqa: E402
from vit_reference import DINOHead, write_safetensors  # noqa: E402

vit_reference.DTYPES[torch.float64] = "F64"


def build(arch, seed, cifar_stem=False):
    torch.manual_seed(seed)
    m = getattr(torchvision.models, arch)()
    m.fc = nn.Identity()
    if cifar_stem:
        m.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(m.conv1.weight, mode="fan_out", nonlinearity="relu")
        m.maxpool = nn.Identity()
    return m


def perturb_bn_(model, seed):
    """BatchNorm affine parameters and running statistics away from their 1/0 init, so that
    train and eval modes and the affine transform all matter."""
    g = torch.Generator().manual_seed(seed + 1000)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, nn.BatchNorm2d):
                n = mod.num_features
                mod.weight.copy_(1 + 0.3 * torch.randn(n, generator=g))
                mod.bias.copy_(0.3 * torch.randn(n, generator=g))
                mod.running_mean.copy_(0.2 * torch.randn(n, generator=g))
                mod.running_var.copy_(0.5 + torch.rand(n, generator=g))
                mod.num_batches_tracked.fill_(7)


def mode_parity(a):
    model = build(a.arch, a.seed, a.cifar_stem)
    if not a.cifar_stem:
        write_safetensors(os.path.join(a.out, "init.safetensors"), model.state_dict())
    perturb_bn_(model, a.seed)
    write_safetensors(os.path.join(a.out, "weights.safetensors"), model.state_dict())
    g = torch.Generator().manual_seed(a.seed + 7)
    x = torch.randn(a.batch, 3, a.size, a.size, generator=g)
    io = {"input": x.clone()}
    model.eval()
    with torch.no_grad():
        io["eval"] = model(x)
    model64 = copy.deepcopy(model).double()
    model.train()
    with torch.no_grad():
        io["train"] = out = model(x)
    for name, b in model.named_buffers():
        io[f"after.{name}"] = b
    w = torch.randn(out.shape, generator=g)
    io["w"] = w
    model64.train()
    xg = x.double().requires_grad_(True)
    loss = (model64(xg) * w.double()).sum() / a.batch
    loss.backward()
    for name, p in model64.named_parameters():
        io[f"grad.{name}"] = p.grad
    io["grad.input"] = xg.grad
    write_safetensors(os.path.join(a.out, "io.safetensors"), io)


def perturb_all_(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.state_dict().values():
            if p.is_floating_point():
                p.add_(0.01 * torch.randn(p.shape, generator=g))


def mode_checkpoints(a):
    student = build("resnet50", a.seed)
    perturb_bn_(student, a.seed)
    teacher = build("resnet50", a.seed + 1)
    perturb_bn_(teacher, a.seed + 1)
    s_head = DINOHead(2048, 256, use_bn=True, hidden_dim=64, bottleneck_dim=32)
    t_head = DINOHead(2048, 256, use_bn=True, hidden_dim=64, bottleneck_dim=32)
    perturb_all_(t_head, a.seed + 2)
    g = torch.Generator().manual_seed(a.seed + 7)
    x = torch.randn(2, 3, 64, 64, generator=g)
    io = {"input": x}
    for m in (student, teacher, s_head, t_head):
        m.eval()
    with torch.no_grad():
        io["feat.backbone"] = io["feat.teacher"] = teacher(x)
        io["feat.student"] = student(x)
        io["logits.teacher"] = t_head(io["feat.teacher"])
    write_safetensors(os.path.join(a.out, "io.safetensors"), io)

    # The released backbone-only file: torchvision keys, no fc.
    torch.save(teacher.state_dict(), os.path.join(a.out, "backbone.pth"))
    # A torchvision classifier's state dict (fc included, 1000 classes).
    tv = torchvision.models.resnet50()
    tv.load_state_dict(teacher.state_dict(), strict=False)
    torch.save(tv.state_dict(), os.path.join(a.out, "torchvision.pth"))
    # A training checkpoint as main_dino.py saves it: the student from DDP (`module.`), the
    # teacher without (teacher_without_ddp), both MultiCropWrappers (`backbone.`, `head.`).
    sd_s = {f"module.backbone.{k}": v for k, v in student.state_dict().items()}
    sd_s.update({f"module.head.{k}": v for k, v in s_head.state_dict().items()})
    sd_t = {f"backbone.{k}": v for k, v in teacher.state_dict().items()}
    sd_t.update({f"head.{k}": v for k, v in t_head.state_dict().items()})
    opt = torch.optim.SGD(student.parameters(), lr=0.03, momentum=0.9)
    torch.save({"student": sd_s, "teacher": sd_t, "optimizer": opt.state_dict(), "epoch": 3,
                "args": argparse.Namespace(arch="resnet50")},
               os.path.join(a.out, "full.pth"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["parity", "checkpoints"])
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--cifar-stem", action="store_true")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    torch.set_num_threads(1)
    {"parity": mode_parity, "checkpoints": mode_checkpoints}[a.mode](a)


if __name__ == "__main__":
    main()
