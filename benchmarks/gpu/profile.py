"""Where each op's time goes: wall time per call against the device kernels' time per call,
the top kernels, and the host synchronisations per call, for ours and the peer side by side.

    python benchmarks/gpu/profile.py                 # CUDA, the benchmark shapes
    python benchmarks/gpu/profile.py --device cpu    # smoke check: small shapes, CPU ops

Per case: two warm-up calls (the second timed); ``iters`` calls (at most --iters, fewer where a call is slow,
so that each case takes about --budget seconds) timed with one synchronisation at the end
(wall ms/call: what a stream of calls costs, host work included); then the same loop under
torch.profiler. "GPU kernels" sums the device events (kernels, memcpy, memset) per call;
wall minus that is host work or idle device. ``host:`` lines count, per call, the calls that
make the host wait for the device (aten::item / _local_scalar_dense, cudaStreamSynchronize,
cudaDeviceSynchronize less the loop's final one, and the memcpy calls, of which the
device-to-host ones wait). On the CPU the top
lines are the ops by self CPU time. A summary table closes the output.
"""
import argparse
import math
import os
import sys
import time
from collections import defaultdict

os.environ.setdefault("TRITON_INTERPRET", "0")
_HERE = os.path.dirname(os.path.abspath(__file__))
# Run as a script, this folder is sys.path[0], where this file would shadow the standard
# library's `profile` (which cProfile imports): put the repository root there instead.
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
sys.path.insert(0, os.path.dirname(os.path.dirname(_HERE)))

import torch  # noqa: E402
import torchvision  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from benchmarks.peers import grid_sample_rois  # noqa: E402
from fastpapers import ops  # noqa: E402
from fastpapers.reference import gram as ref_gram  # noqa: E402

HOST_WAITS = ("aten::item", "aten::_local_scalar_dense", "cudaStreamSynchronize", "cudaDeviceSynchronize",
              "cudaMemcpy", "cudaMemcpyAsync")


def _boxes(n, dev, seed=0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 1000
    boxes = torch.cat([xy, xy + torch.rand(n, 2, generator=g) * 100], 1)
    return boxes.to(dev), (torch.randperm(n, generator=g).float() / n).to(dev)


def _nms_cases(dev, small):
    for n in ([500] if small else [1000, 20000]):
        b, s = _boxes(n, dev)
        yield f"nms {n}", lambda b=b, s=s: ops.nms(b, s, 0.5), lambda b=b, s=s: torchvision.ops.nms(b, s, 0.5)
    imgs, per = (2, 500) if small else (16, 5000)
    b, s = _boxes(imgs * per, dev, 1)
    cls = torch.randint(0, 80, (imgs * per,), generator=torch.Generator().manual_seed(2)).to(dev)
    idx = torch.arange(imgs, device=dev).repeat_interleave(per) * 80 + cls
    yield (f"batched_nms {imgs}x{per}, 80 classes", lambda: ops.batched_nms(b, s, idx, 0.5),
           lambda: torchvision.ops.batched_nms(b, s, idx, 0.5))


def _roi_cases(dev, small):
    k, c, h, w = (32, 64, 19, 25) if small else (256, 512, 38, 50)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, c, h, w, generator=g).to(dev)
    xy = torch.rand(k, 2, generator=g) * torch.tensor([w * 16 * 0.9, h * 16 * 0.9])
    rois = torch.cat([torch.zeros(k, 1), xy, xy + torch.rand(k, 2, generator=g) * 300 + 16], 1).to(dev)
    grad = torch.randn(k, c, 7, 7, generator=g).to(dev)
    align = {"ours": lambda a, r: ops.roi_align(a, r, 7, 1 / 16, 2),
             "peer": lambda a, r: torchvision.ops.roi_align(a, r, 7, 1 / 16, 2)}
    bil = {"ours": lambda a, r: ops.roi_bilinear(a, r, 7, 1 / 16),
           "peer": lambda a, r: grid_sample_rois(a, r, 7, 1 / 16)}

    def fwd(fn):
        def run():
            with torch.no_grad():
                return fn(x, rois)
        return run

    def fwd_bwd(fn, rois_grad):
        def run():
            xx, rr = x.detach().requires_grad_(), rois.detach().requires_grad_(rois_grad)
            fn(xx, rr).backward(grad)
        return run

    yield f"roi_align fwd {k}", fwd(align["ours"]), fwd(align["peer"])
    yield f"roi_align fwd+bwd {k}", fwd_bwd(align["ours"], False), fwd_bwd(align["peer"], False)
    yield f"roi_bilinear fwd {k}", fwd(bil["ours"]), fwd(bil["peer"])
    yield f"roi_bilinear fwd+bwd {k}", fwd_bwd(bil["ours"], True), fwd_bwd(bil["peer"], True)


def _style_cases(dev, small):
    shapes = [(1, 64, 64, torch.float32)] if small else [
        (4, 64, 256, torch.float32), (1, 512, 32, torch.float32), (4, 64, 256, torch.bfloat16)]
    for b, c, s, dtype in shapes:
        if dtype != torch.float32 and dev != "cuda":
            continue
        g = torch.Generator(dev).manual_seed(0)
        f = torch.rand(b, c, s, s, generator=g, device=dev).to(dtype).requires_grad_()
        t = ref_gram.gram_matrix(2 * torch.rand(1, c, s, s, generator=g, device=dev))[0].to(dtype)

        def peer_loss(fs, ts, dtype=dtype):
            if dtype == torch.float32:
                return ref_gram.style_loss(fs, ts)
            with torch.autocast(dev, dtype=dtype):  # bf16 products, float32 mse_loss
                return ref_gram.style_loss(fs, ts)

        def step(fn, f=f, t=t):
            f.grad = None
            fn([f], [t]).backward()

        name = f"style_loss fwd+bwd {b}x{c}x{s}x{s} {str(dtype).replace('torch.', '')}"
        yield name, lambda step=step: step(ops.style_loss), lambda step=step, p=peer_loss: step(p)


def _pyramid_cases(dev, small):
    try:
        import kornia
        kt = kornia.geometry.transform
    except ImportError:
        kt = None
    for shape in ([(2, 3, 128, 128)] if small else [(16, 3, 256, 256), (16, 3, 1024, 1024)]):
        x = torch.rand(*shape, device=dev, generator=torch.Generator(dev).manual_seed(0))

        def peer(x=x):
            pyr = kt.build_laplacian_pyramid(x, 4)
            out = pyr[-1]
            for lap in reversed(pyr[:-1]):
                out = kt.pyrup(out) + lap
            return out

        yield (f"laplacian round trip {'x'.join(map(str, shape))}, 4 levels",
               lambda x=x: ops.laplacian_reconstruct(ops.laplacian_pyramid(x, 4)), peer if kt else None)


def _beam_cases(dev, small):
    from fastpapers.reference.beam_search import transformers_generate
    k, v, steps = (5, 1000, 8) if small else (5, 32000, 64)
    for b in ([2] if small else [32]):
        g = torch.Generator().manual_seed(1)
        logits = (torch.randn(b * k, v, generator=g) * 3).to(dev)
        scores = torch.randn(b * k, generator=g).to(dev)
        yield (f"beam_search_step {b * k}x{v}", lambda l=logits, s=scores: ops.beam_search_step(l, s, k, 2 * k),
               lambda l=logits, s=scores, b=b: (torch.log_softmax(l, -1) + s[:, None]).view(b, k * v).topk(2 * k))
    for b in ([2] if small else [32, 1]):
        g = torch.Generator().manual_seed(0)
        bank = torch.randn(4, 2 * b * k, v, generator=g) * 3
        bank[:, ::3, 2] = 11.0
        bank = bank.to(dev)
        ids = torch.randint(3, v, (b, 4), generator=g).to(dev)

        def fn(input_ids, bank=bank, b=b):
            t = input_ids.shape[1]
            o = (t * 37) % (b * k)
            return bank[t % 4, o:o + b * k]

        opts = dict(num_beams=k, max_length=4 + steps, eos_token_id=2, pad_token_id=1)
        yield (f"beam_search B={b} K={k} V={v} {steps} steps",
               lambda fn=fn, ids=ids, opts=opts: ops.beam_search(lambda x, s: (fn(x), s), ids, **opts),
               lambda fn=fn, ids=ids, opts=opts: transformers_generate(fn, ids, v, output_scores=False, **opts))


CASES = (_nms_cases, _roi_cases, _style_cases, _pyramid_cases, _beam_cases)


def _sync(dev):
    if dev == "cuda":
        torch.cuda.synchronize()


def _is_device_event(e):
    return getattr(e, "device_type", None) == torch.autograd.DeviceType.CUDA


def profile_call(fn, dev, max_iters, budget):
    fn()  # first call: compilation, allocator growth
    _sync(dev)
    t0 = time.perf_counter()
    fn()
    _sync(dev)
    iters = max(2, min(max_iters, math.ceil(budget / max(time.perf_counter() - t0, 1e-6))))
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    _sync(dev)
    wall = (time.perf_counter() - t0) / iters
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev == "cuda" else [])
    with profile(activities=acts) as prof:
        for _ in range(iters):
            fn()
        _sync(dev)
    kernels, host = defaultdict(lambda: [0.0, 0]), defaultdict(int)
    for e in prof.events():
        if _is_device_event(e):
            k = kernels[e.name]
            k[0] += e.time_range.elapsed_us()
            k[1] += 1
        elif e.name in HOST_WAITS:
            host[e.name] += 1
    if dev == "cuda":
        host["cudaDeviceSynchronize"] -= 1  # the loop's own final synchronisation
    else:
        for a in prof.key_averages():
            if not a.key.startswith("ProfilerStep"):
                kernels[a.key] = [a.self_cpu_time_total, a.count]
    return dict(wall_ms=wall * 1e3, iters=iters, kernels=kernels, host=host,
                kernel_ms=sum(t for t, _ in kernels.values()) / iters / 1e3 if dev == "cuda" else None)


def report(name, r, dev, top, out):
    if dev == "cuda":
        out(f"### {name}: wall {r['wall_ms']:.3f} ms/call, GPU kernels {r['kernel_ms']:.3f} ms/call, "
            f"host/idle {r['wall_ms'] - r['kernel_ms']:.3f} ms ({r['iters']} calls)")
    else:
        out(f"### {name}: wall {r['wall_ms']:.3f} ms/call ({r['iters']} calls; top ops by self CPU time)")
    for kname, (us, count) in sorted(r["kernels"].items(), key=lambda kv: -kv[1][0])[:top]:
        out(f"  {us / r['iters'] / 1e3:9.3f} ms  x{count / r['iters']:<4.3g} {kname[:110]}")
    for hname in HOST_WAITS:
        if r["host"].get(hname, 0) > 0:
            out(f"   host: {hname} x{r['host'][hname] / r['iters']:.1f}/call")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cuda", "cpu"])
    p.add_argument("--iters", type=int, default=20, help="most calls profiled per case")
    p.add_argument("--budget", type=float, default=0.3, help="seconds of calls per case (fewer calls when slow)")
    p.add_argument("--small", action="store_true", help="small shapes (default on the CPU)")
    p.add_argument("--only", default="", help="profile only cases whose name contains this")
    p.add_argument("--top", type=int, default=6, help="kernels (ops on the CPU) listed per case")
    a = p.parse_args(argv)
    dev, small = a.device, a.small or a.device == "cpu"
    if dev == "cuda" and not torch.cuda.is_available():
        p.error("no CUDA device visible; use --device cpu")
    out = lambda s="": print(s, flush=True)  # noqa: E731
    name = torch.cuda.get_device_name() if dev == "cuda" else "cpu"
    out(f"fastpapers profile on {name}, torch {torch.__version__}{', small shapes' if small else ''}")
    rows = []
    try:
        _run_cases(dev, small, a, out, rows)
    except KeyboardInterrupt:  # cut at the harness's time limit: keep what was measured
        out("### interrupted: the summary covers the cases above")
    _summary(rows, out)


def _run_cases(dev, small, a, out, rows):
    for make in CASES:
        try:
            cases = list(make(dev, small))
        except Exception as e:  # a missing peer or op must not stop the other cases
            out(f"### {make.__name__}: not run ({type(e).__name__}: {e})")
            continue
        for case, ours, peer in cases:
            if a.only and a.only not in case:
                continue
            for impl, fn in (("ours", ours), ("peer", peer)):
                if fn is None:
                    out(f"### {impl} {case}: peer not installed")
                    continue
                try:
                    r = profile_call(fn, dev, a.iters, a.budget)
                except Exception as e:
                    out(f"### {impl} {case}: failed ({type(e).__name__}: {str(e)[:200]})")
                    continue
                report(f"{impl} {case}", r, dev, a.top, out)
                rows.append((f"{impl} {case}", r))


def _summary(rows, out):
    out()
    out("| case | wall ms/call | GPU kernel ms/call | kernel share | item/call | stream syncs/call |")
    out("|---|---|---|---|---|---|")
    for case, r in rows:
        per = lambda k: r["host"].get(k, 0) / r["iters"]  # noqa: E731
        km = "-" if r["kernel_ms"] is None else f"{r['kernel_ms']:.3f}"
        share = "-" if r["kernel_ms"] is None else f"{min(1.0, r['kernel_ms'] / r['wall_ms']):.0%}"
        out(f"| {case} | {r['wall_ms']:.3f} | {km} | {share} | {per('aten::item'):.1f} | "
            f"{per('cudaStreamSynchronize'):.1f} |")


if __name__ == "__main__":
    main()
