"""Reference values for crates/train/src/loss.rs (DINO loss, center EMA, diagnostics).

Re-implements `DINOLoss` of facebookresearch/dino `main_dino.py` (single process, so the
all-reduce of the center is the identity) and writes, for several steps on fixed random logits:
student_{i}.npy [n_crops*B, K], teacher_{i}.npy [2B, K], epoch_{i}.npy, loss_{i}.npy,
center_{i}.npy (after the update), grad_{i}.npy (d loss / d student logits),
entropy_{i}.npy (mean per-row teacher entropy), kl_{i}.npy (mean over pairs of KL(t||s),
computed directly), mean_entropy_{i}.npy (entropy of the batch-mean teacher distribution).

Usage: python dino_loss.py OUT_DIR [K B N_CROPS STEPS]
"""
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F


class RefDINOLoss:
    def __init__(self, out_dim, ncrops, warmup_teacher_temp, teacher_temp,
                 warmup_teacher_temp_epochs, nepochs, student_temp=0.1, center_momentum=0.9):
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.ncrops = ncrops
        self.center = torch.zeros(1, out_dim)
        self.teacher_temp_schedule = np.concatenate((
            np.linspace(warmup_teacher_temp, teacher_temp, warmup_teacher_temp_epochs),
            np.ones(nepochs - warmup_teacher_temp_epochs) * teacher_temp,
        ))

    def __call__(self, student_output, teacher_output, epoch):
        student_views = (student_output / self.student_temp).chunk(self.ncrops)
        temp = self.teacher_temp_schedule[epoch]
        teacher_logits = (teacher_output - self.center) / temp
        teacher_views = F.softmax(teacher_logits, dim=-1).detach().chunk(2)
        total, n_terms, kl_total = 0, 0, 0.0
        for iq, q in enumerate(teacher_views):
            for v in range(len(student_views)):
                if v == iq:
                    continue
                logp = F.log_softmax(student_views[v], dim=-1)
                total = total + torch.sum(-q * logp, dim=-1).mean()
                logq = F.log_softmax(teacher_logits.chunk(2)[iq], dim=-1)
                kl_total += torch.sum(q * (logq - logp), dim=-1).mean().item()
                n_terms += 1
        total = total / n_terms
        with torch.no_grad():
            t = F.softmax(teacher_logits, dim=-1)
            entropy = -(t * F.log_softmax(teacher_logits, dim=-1)).sum(-1).mean()
            pbar = t.mean(0)
            mean_entropy = -(pbar * torch.log(pbar.clamp_min(1e-38))).sum()
            stats = dict(entropy=entropy.item(), kl=kl_total / n_terms,
                         mean_entropy=mean_entropy.item(),
                         center_norm=self.center.norm().item())
            batch_center = torch.sum(teacher_output, dim=0, keepdim=True) / len(teacher_output)
            self.center = self.center * self.center_momentum + batch_center * (1 - self.center_momentum)
        return total, stats


def main():
    out = sys.argv[1]
    k, b, ncrops, steps = (int(a) for a in sys.argv[2:6]) if len(sys.argv) > 2 else (96, 4, 6, 5)
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    # Warm-up 0.04 -> 0.07 over 3 of 5 epochs; step i runs in epoch min(i, 4).
    loss_fn = RefDINOLoss(k, ncrops, 0.04, 0.07, 3, 5)
    for i in range(steps):
        epoch = min(i, 4)
        # Cosine-like ranges of a norm_last_layer head, shifted so the center matters.
        student = (torch.rand(ncrops * b, k) * 2 - 1).requires_grad_(True)
        teacher = torch.rand(2 * b, k) * 2 - 1 + 0.3 * torch.arange(k) / k
        loss, st = loss_fn(student, teacher, epoch)
        loss.backward()
        f32 = lambda x: np.asarray(x, dtype=np.float32)
        np.save(f"{out}/student_{i}.npy", f32(student.detach().numpy()))
        np.save(f"{out}/teacher_{i}.npy", f32(teacher.numpy()))
        np.save(f"{out}/epoch_{i}.npy", np.array([epoch], dtype=np.int64))
        np.save(f"{out}/loss_{i}.npy", np.array([loss.item()], dtype=np.float64))
        np.save(f"{out}/center_{i}.npy", f32(loss_fn.center.numpy()))
        np.save(f"{out}/grad_{i}.npy", f32(student.grad.numpy()))
        for key in ("entropy", "kl", "mean_entropy", "center_norm"):
            np.save(f"{out}/{key}_{i}.npy", np.array([st[key]], dtype=np.float64))


if __name__ == "__main__":
    main()
