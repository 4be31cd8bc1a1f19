//! A/B timings of model forward + backward variants (issue #27 items 2 and 6), printed as one
//! JSON line per case: each round times variant A then variant B (the order alternating from
//! round to round, so outside load hits both alike), and the report gives the median times and
//! the median and spread of the per-round ratios A / B (> 1: B is faster).
//!
//! ```text
//! cargo run --release -p dino-model --example model_ab -- --threads 2 --rounds 7 --iters 5
//! ```
//!
//! Cases (shapes of the CIFAR-10 CPU preset, `configs/cifar10_cpu.toml`: 2 × 128 global crops
//! of 32 px, ViT 128 / 4 blocks / 4 heads, patch 8; and of the official ViT-S/16 on small crops,
//! batch 8: 2 × 8 global crops of 64 px and 8 × 8 local crops of 32 px):
//! - `patch_embed`: Conv2d with kernel = stride = patch (ours, the official `PatchEmbed`)
//!   against the same product as a matmul over unfolded patches, forward + weight gradient;
//! - `qkv_heads`: the attention's q, k, v taken by reshape, permute and select (the official
//!   layout) against a split of the fused projection (ours), forward + backward of the attention;
//! - `last_block`: the ViT forward + backward with the full last block against the CLS-only
//!   last block (`model.cls_only_last_block`).

use dino_model::{Backbone, BackboneConfig, TokenScope, VitConfig};
use std::time::Instant;
use tch::{nn, Device, Kind, Tensor};

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}

/// Milliseconds per call of `f`, over `iters` calls.
fn time_ms(iters: usize, f: &mut dyn FnMut()) -> f64 {
    let t = Instant::now();
    for _ in 0..iters {
        f();
    }
    t.elapsed().as_secs_f64() * 1e3 / iters as f64
}

/// Times `a` and `b` in `rounds` alternating rounds after one warm-up call each, and prints the
/// JSON line.
#[allow(clippy::too_many_arguments)]
fn ab(
    case: &str,
    shape: &str,
    names: [&str; 2],
    rounds: usize,
    iters: usize,
    threads: i32,
    a: &mut dyn FnMut(),
    b: &mut dyn FnMut(),
) {
    a();
    b();
    let (mut ta, mut tb) = (Vec::new(), Vec::new());
    for r in 0..rounds {
        if r % 2 == 0 {
            ta.push(time_ms(iters, a));
            tb.push(time_ms(iters, b));
        } else {
            tb.push(time_ms(iters, b));
            ta.push(time_ms(iters, a));
        }
    }
    let ratios: Vec<f64> = ta.iter().zip(&tb).map(|(x, y)| x / y).collect();
    let lo = ratios.iter().cloned().fold(f64::INFINITY, f64::min);
    let hi = ratios.iter().cloned().fold(0.0, f64::max);
    println!(
        "{{\"case\":\"{case}\",\"shape\":\"{shape}\",\"a\":\"{}\",\"b\":\"{}\",\"a_ms\":{:.3},\
         \"b_ms\":{:.3},\"ratio_a_over_b\":{:.3},\"ratio_min\":{lo:.3},\"ratio_max\":{hi:.3},\
         \"rounds\":{rounds},\"iters\":{iters},\"threads\":{threads}}}",
        names[0],
        names[1],
        median(&ta),
        median(&tb),
        median(&ratios),
    );
}

fn randn(shape: &[i64]) -> Tensor {
    Tensor::randn(shape, (Kind::Float, Device::Cpu))
}

fn zero_grads(ts: &[&Tensor]) {
    for t in ts {
        let mut g = t.grad();
        if g.defined() {
            let _ = g.zero_();
        }
    }
}

/// Patch embedding `[B, 3, H, W]` → `[B, N, D]`, forward and weight gradient, both ways.
fn patch_embed(b: i64, side: i64, p: i64, d: i64, opt: (usize, usize, i32)) {
    let x = randn(&[b, 3, side, side]);
    let w = (randn(&[d, 3, p, p]) * 0.02).set_requires_grad(true);
    let bias = Tensor::zeros([d], (Kind::Float, Device::Cpu)).set_requires_grad(true);
    let g = side / p;
    let mut conv = || {
        let y = x
            .conv2d(&w, Some(&bias), [p, p], [0, 0], [1, 1], 1)
            .flatten(2, 3)
            .transpose(1, 2);
        y.sum(Kind::Float).backward();
        zero_grads(&[&w, &bias]);
    };
    let mut matmul = || {
        let u = x
            .reshape([b, 3, g, p, g, p])
            .permute([0, 2, 4, 1, 3, 5])
            .reshape([b, g * g, 3 * p * p]);
        let y = u.linear(&w.reshape([d, 3 * p * p]), Some(&bias));
        y.sum(Kind::Float).backward();
        zero_grads(&[&w, &bias]);
    };
    let shape = format!("{b}x3x{side}x{side}, patch {p}, D {d}");
    let (rounds, iters, threads) = opt;
    ab(
        "patch_embed",
        &shape,
        ["conv2d", "unfold_matmul"],
        rounds,
        iters,
        threads,
        &mut conv,
        &mut matmul,
    );
}

/// Attention forward + backward from `[B, N, D]` tokens, q/k/v by select or by split.
fn qkv_heads(b: i64, n: i64, d: i64, heads: i64, opt: (usize, usize, i32)) {
    let x = randn(&[b, n, d]).set_requires_grad(true);
    let w = (randn(&[3 * d, d]) * 0.02).set_requires_grad(true);
    let bias = Tensor::zeros([3 * d], (Kind::Float, Device::Cpu)).set_requires_grad(true);
    let hd = d / heads;
    let attend = |q: &Tensor, k: &Tensor, v: &Tensor| {
        let o = Tensor::scaled_dot_product_attention(
            q,
            k,
            v,
            None::<Tensor>,
            0.0,
            false,
            (hd as f64).powf(-0.5),
            false,
        );
        o.transpose(1, 2)
            .reshape([b, n, d])
            .sum(Kind::Float)
            .backward();
        zero_grads(&[&x, &w, &bias]);
    };
    let mut select = || {
        let qkv = x
            .linear(&w, Some(&bias))
            .reshape([b, n, 3, heads, hd])
            .permute([2, 0, 3, 1, 4]);
        attend(&qkv.select(0, 0), &qkv.select(0, 1), &qkv.select(0, 2));
    };
    let mut split = || {
        let qkv = x.linear(&w, Some(&bias)).split(d, -1);
        let h = |t: &Tensor| t.reshape([b, n, heads, hd]).transpose(1, 2);
        attend(&h(&qkv[0]), &h(&qkv[1]), &h(&qkv[2]));
    };
    let shape = format!("{b}x{n}x{d}, {heads} heads");
    let (rounds, iters, threads) = opt;
    ab(
        "qkv_heads",
        &shape,
        ["permute_select", "split"],
        rounds,
        iters,
        threads,
        &mut select,
        &mut split,
    );
}

/// The ViT forward + backward (loss: the CLS tokens' mean square), full vs CLS-only last block.
fn last_block(name: &str, cfg: &VitConfig, inputs: &[Tensor], opt: (usize, usize, i32)) {
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let net = Backbone::new(&vs.root(), &BackboneConfig::Vit(cfg.clone())).expect("a valid ViT");
    let vars = vs.trainable_variables();
    let step = |scope: TokenScope| {
        for x in inputs {
            let y = net.forward_scoped(x, true, scope).expect("forward");
            y.square().mean(Kind::Float).backward();
        }
        for v in &vars {
            let mut g = v.grad();
            if g.defined() {
                let _ = g.zero_();
            }
        }
    };
    let shape = inputs
        .iter()
        .map(|x| format!("{:?}", x.size()))
        .collect::<Vec<_>>()
        .join(" + ");
    let (rounds, iters, threads) = opt;
    ab(
        "last_block",
        &format!("{name}: {shape}"),
        ["full", "cls_only"],
        rounds,
        iters,
        threads,
        &mut || step(TokenScope::AllTokens),
        &mut || step(TokenScope::ClsOnly),
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let threads: i32 = arg(&args, "--threads", 2);
    let rounds: usize = arg(&args, "--rounds", 7);
    let iters: usize = arg(&args, "--iters", 5);
    let only: String = arg(&args, "--only", String::new());
    tch::set_num_threads(threads);
    tch::manual_seed(0);
    let opt = (rounds, iters, threads);
    let run = |case: &str| only.is_empty() || only.split(',').any(|c| c == case);

    if run("patch_embed") {
        patch_embed(256, 32, 8, 128, opt); // CIFAR-10 preset, 2 × 128 globals
        patch_embed(16, 64, 16, 384, opt); // ViT-S/16, 2 × 8 globals of 64 px
        patch_embed(64, 32, 16, 384, opt); // ViT-S/16, 8 × 8 locals of 32 px
    }
    if run("qkv_heads") {
        qkv_heads(256, 17, 128, 4, opt);
        qkv_heads(16, 17, 384, 6, opt);
        qkv_heads(64, 5, 384, 6, opt);
    }
    if run("last_block") {
        let mut cifar = VitConfig::vit_tiny(8).with_drop_path(0.0);
        (
            cifar.embed_dim,
            cifar.depth,
            cifar.num_heads,
            cifar.img_size,
        ) = (128, 4, 4, 32);
        last_block(
            "cifar10 preset ViT",
            &cifar,
            &[randn(&[256, 3, 32, 32])],
            opt,
        );
        let vits = VitConfig::vit_small(16);
        let crops = [randn(&[16, 3, 64, 64]), randn(&[64, 3, 32, 32])];
        last_block("ViT-S/16", &vits, &crops, opt);
    }
}
