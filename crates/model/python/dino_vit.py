"""The DINO Vision Transformer in PyTorch, with the official module and parameter names (so its
`state_dict()` keys are those of facebookresearch/dino's `vision_transformer.py` and of our
safetensors backbones).

Written from the DINO paper (Caron et al. 2021, §3.1 and appendix) and the description of the
official code, not copied. Two users: the parity tests' reference
(`tests/reference/vit_reference.py`) and `dino export` (`export_backbone.py`, which needs a
PyTorch module to trace). The position table is resized to the exact patch grid, bicubic
(`PosInterp::ExactSize`, our default); `official_interp=True` gives the v1 scale-factor mode.
`export_friendly=True` always resizes it (an identity at the stored grid: bicubic at scale 1
samples the table's own points), so a traced graph keeps one path for every image size.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def trunc_normal_(t, std=0.02, a=-2.0, b=2.0):
    """Inverse-CDF truncated normal, bounds in absolute units (the official helper's convention)."""
    cdf = lambda x: (1.0 + math.erf(x / math.sqrt(2.0))) / 2.0
    lo, hi = cdf(a / std), cdf(b / std)
    with torch.no_grad():
        t.uniform_(2 * lo - 1, 2 * hi - 1)
        t.erfinv_()
        t.mul_(std * math.sqrt(2.0))
        t.add_(0.0)
        t.clamp_(min=a, max=b)
    return t


def drop_path(x, p, training):
    if p == 0.0 or not training:
        return x
    keep = 1 - p
    mask = (keep + torch.rand((x.shape[0],) + (1,) * (x.ndim - 1), dtype=x.dtype)).floor_()
    return x.div(keep) * mask


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    def __init__(self, dim, heads, qkv_bias=True):
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(b, n, c)
        return self.proj(out), attn


class Block(nn.Module):
    def __init__(self, dim, heads, mlp_ratio, qkv_bias, eps, dp):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, heads, qkv_bias)
        self.dp = dp
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x, return_attention=False):
        y, attn = self.attn(self.norm1(x))
        if return_attention:
            return attn
        x = x + drop_path(y, self.dp, self.training)
        return x + drop_path(self.mlp(self.norm2(x)), self.dp, self.training)


class PatchEmbed(nn.Module):
    def __init__(self, img_size, patch, dim):
        super().__init__()
        self.patch = patch
        self.num_patches = (img_size // patch) ** 2
        self.proj = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class VisionTransformer(nn.Module):
    def __init__(self, patch=16, dim=384, depth=12, heads=6, mlp_ratio=4.0, qkv_bias=True,
                 drop_path_rate=0.0, img_size=224, eps=1e-6, official_interp=False,
                 export_friendly=False):
        super().__init__()
        self.embed_dim = dim
        self.official_interp = official_interp
        self.export_friendly = export_friendly
        self.patch_embed = PatchEmbed(img_size, patch, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.patch_embed.num_patches, dim))
        rates = [r.item() for r in torch.linspace(0, drop_path_rate, depth)]
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio, qkv_bias, eps, r) for r in rates)
        self.norm = nn.LayerNorm(dim, eps=eps)
        trunc_normal_(self.pos_embed)
        trunc_normal_(self.cls_token)
        self.apply(self._init)

    @staticmethod
    def _init(m):
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def pos_for(self, h, w):
        p = self.patch_embed.patch
        gh, gw = h // p, w // p
        n0 = self.pos_embed.shape[1] - 1
        g0 = int(math.sqrt(n0))
        if gh == g0 and gw == g0 and not self.export_friendly:
            return self.pos_embed
        cls, grid = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        grid = grid.reshape(1, g0, g0, -1).permute(0, 3, 1, 2)
        if self.official_interp:
            grid = F.interpolate(grid, scale_factor=((gh + 0.1) / g0, (gw + 0.1) / g0),
                                 mode="bicubic")
            assert grid.shape[-2:] == (gh, gw)
        else:
            grid = F.interpolate(grid, size=(gh, gw), mode="bicubic", align_corners=False)
        return torch.cat([cls, grid.permute(0, 2, 3, 1).reshape(1, gh * gw, -1)], dim=1)

    def tokens_in(self, x):
        b, _, h, w = x.shape
        t = torch.cat([self.cls_token.expand(b, -1, -1), self.patch_embed(x)], dim=1)
        return t + self.pos_for(h, w)

    def forward(self, x):
        t = self.tokens_in(x)
        for blk in self.blocks:
            t = blk(t)
        return self.norm(t)[:, 0]

    def last_selfattention(self, x):
        t = self.tokens_in(x)
        for blk in self.blocks[:-1]:
            t = blk(t)
        return self.blocks[-1](t, return_attention=True)

    def intermediate_layers(self, x, n):
        t = self.tokens_in(x)
        out = []
        for i, blk in enumerate(self.blocks):
            t = blk(t)
            if i >= len(self.blocks) - n:
                out.append(self.norm(t))
        return out
