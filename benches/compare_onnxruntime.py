#!/usr/bin/env python3
"""netc against ONNX Runtime, side by side, in one process.

For each model and batch: export the .net model with random weights to ONNX
(`netc export`), compile the same model with the same weights to native code
(`netc compile` -> .o, linked with the runtime into a shared library), run
both on the same input, check the outputs agree (max |d| <= 1e-3 * max
|output|), then time them alternately: warm-up runs of each, then rounds of a block
of back-to-back runs of each engine (after untimed runs lasting at least 50 ms),
the order flipping every round.
Reports medians, the speed-up (ONNX Runtime median / netc median), netc's
effective GFLOP/s and its share of the machine's FMA peak (measured by
`netc bench`), each engine's peak resident memory, measured in a separate
process that runs only that engine, and the core-to-core round trip before
and after the row (a C probe; on a VM it shows when the host has placed the
two vCPUs far apart, which slows two-thread runs).

Writes a Markdown table and a JSON file (--out) and prints the table.

With --by-type it also profiles both engines layer by layer — ONNX Runtime's
node profile (a separate, profiled session) against `netc bench`'s per-layer
times — and adds a table of time per layer type (conv 1x1, conv 3x3, conv
other, pool, dense, ...): the sums of per-node medians, which show where one
engine wins and the other loses.

usage: benches/compare_onnxruntime.py [--threads 2] [--iters 20] [--by-type]
         [--out target/bench-report] MODEL[:BATCH[,BATCH...]] ...
  e.g. benches/compare_onnxruntime.py deep_convnet resnet18:1,8

Needs a release build (`cargo build --release`: target/release/netc and
libnetc_runtime.a), a C compiler, and `pip install -r benches/requirements.txt`.
"""
import argparse
import ctypes
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOLERANCE = 1e-3
TARGET_SPEEDUP = 1.25


def sh(*cmd):
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stderr}")
    return proc.stdout


def model_path(name):
    if os.path.exists(name):
        return name
    path = os.path.join(ROOT, "models", name + ".net")
    if not os.path.exists(path):
        sys.exit(f"no model {name!r} (looked for {path})")
    return path


# Core-to-core round trip: two threads pinned to CPUs 0 and 1 bounce a
# cache line. On this kind of VM the host sometimes places the two vCPUs
# far apart for tens of seconds (a C ping-pong probe: ≈ 400 ns a round
# trip against ≈ 100 ns), and two-thread runs are then slower, netc's more
# than ORT's (GoogLeNet batch 1: netc 5.5 → 7.6 ms, ORT 7.1 → 8.1 ms; one
# thread is unaffected), so each row records it before and after timing.
ROUND_TRIP_C = r"""
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <time.h>
static _Atomic long flag __attribute__((aligned(64)));
static void pin(int c) { cpu_set_t s; CPU_ZERO(&s); CPU_SET(c, &s); pthread_setaffinity_np(pthread_self(), sizeof s, &s); }
enum { N = 100000 };
static void *pong(void *a) {
    (void)a; pin(1);
    for (long i = 1; i < 2 * N; i += 2) { while (atomic_load(&flag) != i) {} atomic_store(&flag, i + 1); }
    return 0;
}
int main(void) {
    pthread_t t; struct timespec a, b;
    pthread_create(&t, 0, pong, 0); pin(0);
    long i = 0;
    for (; i < N; i += 2) { atomic_store(&flag, i + 1); while (atomic_load(&flag) != i + 2) {} }
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (; i < 2 * N; i += 2) { atomic_store(&flag, i + 1); while (atomic_load(&flag) != i + 2) {} }
    clock_gettime(CLOCK_MONOTONIC, &b);
    pthread_join(t, 0);
    printf("%.0f\n", ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / (N / 2));
    return 0;
}
"""


def round_trip_probe(workdir):
    """A command printing the core-to-core round trip in ns, or None
    (one CPU, or no C compiler)."""
    if (os.cpu_count() or 1) < 2:
        return None
    exe = os.path.join(workdir, "round_trip")
    src = exe + ".c"
    with open(src, "w") as f:
        f.write(ROUND_TRIP_C)
    if subprocess.run(["cc", "-O2", "-pthread", src, "-o", exe], capture_output=True).returncode != 0:
        return None
    return exe


def round_trip_ns(probe):
    if probe is None:
        return None
    try:
        return float(subprocess.run([probe], capture_output=True, text=True, timeout=10).stdout)
    except (subprocess.SubprocessError, ValueError):
        return None


def aligned(nbytes, align=64):
    """A zeroed uint8 array of nbytes whose data starts on an `align` boundary."""
    raw = np.zeros(nbytes + align, dtype=np.uint8)
    offset = (-raw.ctypes.data) % align
    return raw[offset : offset + nbytes]


class Netc:
    """A netc-compiled model loaded from its shared library."""

    def __init__(self, workdir, stem, threads):
        lib = ctypes.CDLL(os.path.join(workdir, stem + ".so"))
        for name in ("arena_size", "weights_size"):
            getattr(lib, f"{stem}_{name}").restype = ctypes.c_size_t
        # `forward` takes arrays of input and output pointers, so models
        # with several outputs (FCN's out and aux) run the same way.
        self.run_fn = getattr(lib, f"{stem}_forward")
        self.run_fn.restype = None
        self.run_fn.argtypes = [ctypes.c_void_p] * 4
        lib.netc_set_threads.argtypes = [ctypes.c_uint]
        if lib.netc_set_threads(threads) != 0:
            sys.exit("netc threads had already started")
        wbytes = getattr(lib, f"{stem}_weights_size")()
        self.weights = aligned(wbytes)
        with open(os.path.join(workdir, stem + ".weights"), "rb") as f:
            f.readinto(memoryview(self.weights))
        self.arena = aligned(max(getattr(lib, f"{stem}_arena_size")(), 64))
        self.lib = lib

    def bound(self, x, outs):
        """A call of the model on `x` into the arrays `outs` with its
        pointers taken once, as a C caller would make it (per run, the
        `.ctypes` lookups cost about 3 µs of the MNIST ConvNet's 45)."""
        ins = (ctypes.c_void_p * 1)(x.ctypes.data)
        out_ptrs = (ctypes.c_void_p * len(outs))(*(o.ctypes.data for o in outs))
        run_fn = self.run_fn
        args = (ctypes.addressof(ins), ctypes.addressof(out_ptrs),
                self.weights.ctypes.data, self.arena.ctypes.data)

        def run():
            run_fn(*args)
            return ins, out_ptrs  # keeps the pointer arrays alive

        return run

    def run(self, x, outs):
        self.bound(x, outs)()
        return outs


def ort_bound(session, x, outs):
    """`session` run on `x` into the arrays `outs` (one per output) through
    an I/O binding made once: ONNX Runtime's lowest-overhead Python entry
    (no feed dict, no output allocated per run; about 2 µs less than `run`
    on the MNIST ConvNet)."""
    binding = session.io_binding()
    binding.bind_cpu_input(session.get_inputs()[0].name, x)
    for meta, out in zip(session.get_outputs(), outs):
        binding.bind_output(meta.name, "cpu", 0, np.float32, list(out.shape), out.ctypes.data)

    def run():
        session.run_with_iobinding(binding)
        return outs  # also keeps the bound buffers alive

    return run


def ort_session(onnx_path, threads, profile_prefix=None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])


def ort_layer_type(node):
    """netc's layer-type name for an ONNX Runtime profile event's node."""
    op = node.get("op_name", "?")
    if op in ("Conv", "FusedConv"):
        shapes = [next(iter(s.values())) for s in node.get("input_type_shape", [])]
        weight = shapes[1] if len(shapes) > 1 else []
        if len(weight) >= 4 and weight[2] == weight[3] and weight[2] in (1, 3):
            return f"conv {weight[2]}x{weight[3]}"
        return "conv other"
    if op in ("MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool"):
        return "pool"
    if op in ("Gemm", "MatMul", "FusedGemm", "FusedMatMul"):
        return "dense"
    if op in ("ReorderInput", "ReorderOutput"):
        return "layout (ORT)"
    return op.lower()


def ort_by_type(onnx_path, threads, feed, runs, workdir):
    """ms per layer type: per node, the median over `runs` profiled runs."""
    session = ort_session(onnx_path, threads, os.path.join(workdir, "ort-profile"))
    for _ in range(runs):
        session.run(None, feed)
    with open(session.end_profiling()) as f:
        events = json.load(f)
    per_node = {}
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            per_node.setdefault(e["name"], []).append((e["dur"], e.get("args", {})))
    ms = {}
    for samples in per_node.values():
        kind = ort_layer_type(samples[0][1])
        ms[kind] = ms.get(kind, 0.0) + statistics.median(d for d, _ in samples) / 1e3
    return ms


def netc_by_type(model, batch, args):
    """ms per layer type from `netc bench`'s per-layer profile."""
    report = json.loads(sh(args.netc, "bench", model, "--batch", str(batch), "--threads", str(args.threads),
                           "--iters", str(args.iters), "--format", "json"))
    return {kind: t["ms"] for kind, t in report["by_type"].items()}


def build(model, batch, seed, workdir, netc, runtime_lib, size=None):
    """Export and compile `model` (at `size`, "HxW", if given); returns
    (onnx path, library stem)."""
    sized = ["--size", size] if size else []
    onnx_path = os.path.join(workdir, "model.onnx")
    sh(netc, "export", model, "--onnx", onnx_path, "--batch", str(batch), "--random-weights", str(seed), *sized)
    obj = os.path.join(workdir, "model.o")
    sh(netc, "compile", model, "-o", obj, "--batch", str(batch), "--random-weights", str(seed), *sized)
    sh(
        os.environ.get("CC", "cc"), "-shared", "-o", os.path.join(workdir, "model.so"), obj,
        "-Wl,-u,netc_set_threads", runtime_lib, "-lpthread", "-ldl", "-lm",
    )
    return onnx_path, "model"


def peak_rss_child(engine, workdir, threads, batch, iters):
    """Peak RSS (bytes) of a fresh Python process running only `engine`."""
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--child", engine, workdir,
         str(threads), str(batch), str(iters)],
        capture_output=True, text=True,
    )
    if out.returncode != 0:
        sys.exit(f"{engine} memory run failed:\n{out.stderr}")
    return int(out.stdout.strip())


def child(engine, workdir, threads, batch, iters):
    x, outs = io_buffers(workdir, batch)
    if engine == "ort":
        session = ort_session(os.path.join(workdir, "model.onnx"), threads)
        name = session.get_inputs()[0].name
        for _ in range(iters):
            session.run(None, {name: x})
    else:
        model = Netc(workdir, "model", threads)
        for _ in range(iters):
            model.run(x, outs)
    print(peak_rss())


def peak_rss():
    """This process's peak resident set in bytes. VmHWM belongs to the
    address space, so unlike ru_maxrss it does not inherit the parent's
    high-water mark across fork and exec."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def io_buffers(workdir, batch):
    meta = json.load(open(os.path.join(workdir, "shapes.json")))
    x = np.random.RandomState(0).uniform(-1, 1, meta["input"]).astype(np.float32)
    return x, [np.zeros(shape, dtype=np.float32) for shape in meta["outputs"]]


def ms(v):
    """A time in ms to two decimals, or three significant digits below 1 ms
    (the MNIST ConvNet runs in 0.04 ms)."""
    return f"{v:.2f}" if v >= 1 else f"{v:.3g}"


def type_ms(v):
    """A per-type sum for the by-type table: "—" when that engine has no
    layer of the type."""
    return ms(v) if v > 0 else "—"


# Unpooling puts each value where its pool window's maximum was: where two
# candidates differ by less than float32 rounding, the engines may pick
# different positions and the decoder spreads the moved value. SegNet with
# this script's weights and input flips such windows at 360x480 and at
# 96x128 (there one window of pool 2, 0.7938065 against 0.793804 in the f64
# reference, which netc's JIT computes as 0.7938057 and 0.7938061); at
# 128x160 none is that close, so models with `maxunpool` are also checked
# there, and that check decides agreement.
UNPOOL_CHECK_SIZE = "128x160"


def outputs_diff(model, batch, args, size):
    """(max |netc - ORT|, max |ORT|) over every output at `size`."""
    with tempfile.TemporaryDirectory(prefix="netc-vs-ort-check-") as workdir:
        onnx_path, stem = build(model, batch, args.seed, workdir, args.netc, args.runtime_lib, size)
        session = ort_session(onnx_path, args.threads)
        json.dump({"input": session.get_inputs()[0].shape,
                   "outputs": [o.shape for o in session.get_outputs()]},
                  open(os.path.join(workdir, "shapes.json"), "w"))
        x, outs = io_buffers(workdir, batch)
        expected = session.run(None, {session.get_inputs()[0].name: x})
        got = Netc(workdir, stem, args.threads).run(x, outs)
        scale = max(float(np.abs(e).max()) for e in expected)
        return max(float(np.abs(g - e).max()) for g, e in zip(got, expected)), scale


def compare(model, batch, args, peak_gflops):
    name = os.path.splitext(os.path.basename(model))[0]
    info = json.loads(sh(args.netc, "check", model, "--batch", str(batch), "--format", "json"))
    unpools = any(layer["op"].startswith("maxunpool") for layer in info["layers"])
    small = None
    if unpools:
        diff, scale = outputs_diff(model, batch, args, UNPOOL_CHECK_SIZE)
        small = {"size": UNPOOL_CHECK_SIZE, "max_abs_diff": diff, "max_abs_output": scale,
                 "outputs_agree": diff <= TOLERANCE * scale}
    with tempfile.TemporaryDirectory(prefix="netc-vs-ort-") as workdir:
        onnx_path, stem = build(model, batch, args.seed, workdir, args.netc, args.runtime_lib)
        session = ort_session(onnx_path, args.threads)
        in_meta = session.get_inputs()[0]
        json.dump({"input": in_meta.shape, "outputs": [o.shape for o in session.get_outputs()]},
                  open(os.path.join(workdir, "shapes.json"), "w"))
        x, outs = io_buffers(workdir, batch)
        netc = Netc(workdir, stem, args.threads)
        feed = {in_meta.name: x}

        # Every output compared (FCN's aux head too), relative to the
        # largest magnitude over all of them.
        expected = session.run(None, feed)
        got = [o.copy() for o in netc.run(x, outs)]
        scale = max(float(np.abs(e).max()) for e in expected)
        diff = max(float(np.abs(g - e).max()) for g, e in zip(got, expected))
        agree = diff <= TOLERANCE * scale

        # Both engines through their lowest-overhead entry from Python, so
        # the times are the engines' own rather than Python's glue.
        run_ort = ort_bound(session, x, [np.zeros_like(o) for o in outs])
        run_netc = netc.bound(x, outs)

        def time_ort():
            t = time.perf_counter()
            run_ort()
            return time.perf_counter() - t

        def time_netc():
            t = time.perf_counter()
            run_netc()
            return time.perf_counter() - t

        # Alternate blocks of back-to-back runs, the order flipping every
        # round: alternation spreads the machine's drift over both engines.
        # Each block starts with untimed runs (at least one, at least
        # SETTLE_S of them): both engines' worker threads spin for a while
        # after a run, and on 2 cores the other engine's spinning threads
        # would otherwise take a core from the first runs of the block
        # (deep_convnet, 0.3 ms a run, measured 2x slower that way).
        def settle(timer):
            spent = timer()
            while spent < SETTLE_S:
                spent += timer()

        round_trip = [round_trip_ns(args.round_trip)]
        for _ in range(args.warmup):
            time_ort()
            time_netc()
        ort_s, netc_s = [], []
        engines = [(time_ort, ort_s), (time_netc, netc_s)]
        rounds = rounds_of(args)
        for r in range(rounds):
            for timer, samples in engines if r % 2 == 0 else engines[::-1]:
                settle(timer)
                samples.extend(timer() for _ in range(args.block))
        round_trip.append(round_trip_ns(args.round_trip))
        del session, netc
        mem_iters = max(3, args.warmup)
        rss = {e: peak_rss_child(e, workdir, args.threads, batch, mem_iters) for e in ("netc", "ort")}
        by_type = None
        if args.by_type:
            ort_types = ort_by_type(onnx_path, args.threads, feed, args.iters, workdir)
            netc_types = netc_by_type(model, batch, args)
            by_type = {kind: {"netc_ms": netc_types.get(kind, 0.0), "ort_ms": ort_types.get(kind, 0.0)}
                       for kind in sorted(set(ort_types) | set(netc_types))}

    ort_ms = 1e3 * statistics.median(ort_s)
    netc_ms = 1e3 * statistics.median(netc_s)
    gflops = 2 * info["macs"] / (netc_ms * 1e-3) / 1e9
    return {
        "model": name,
        "batch": batch,
        "threads": args.threads,
        "iters": args.iters,
        "netc_ms": netc_ms,
        "ort_ms": ort_ms,
        "speedup": ort_ms / netc_ms,
        "netc_gflops": gflops,
        "netc_peak_fraction": gflops / peak_gflops if peak_gflops else None,
        "ort_gflops": 2 * info["macs"] / (ort_ms * 1e-3) / 1e9,
        "max_abs_diff": diff,
        "max_abs_output": scale,
        "outputs_agree": small["outputs_agree"] if small else agree,
        "unpool_check": small,
        "netc_peak_rss": rss["netc"],
        "ort_peak_rss": rss["ort"],
        "by_type": by_type,
        "core_round_trip_ns": round_trip,
        "netc_samples_ms": [1e3 * s for s in netc_s],
        "ort_samples_ms": [1e3 * s for s in ort_s],
    }


def markdown(rows, meta):
    lines = [
        f"netc vs ONNX Runtime {meta['onnxruntime']} on {meta['cpu']}, {meta['threads']} threads, "
        f"median of {meta['iters']} runs each, in alternating blocks of {meta['block']}; FMA peak {meta['peak_gflops']:.0f} GFLOP/s "
        f"(measured by `netc bench`). Speed-up = ORT ms / netc ms; target >= {TARGET_SPEEDUP}.",
        "",
        "| model | batch | netc ms | ORT ms | speed-up | target | netc GFLOP/s | % of FMA peak "
        "| outputs max rel Δ | netc peak RSS | ORT peak RSS | core↔core ns |",
        "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        met = "met" if r["speedup"] >= TARGET_SPEEDUP else "not met"
        peak = f"{100 * r['netc_peak_fraction']:.0f}%" if r["netc_peak_fraction"] else "?"
        rel = f"{r['max_abs_diff'] / max(r['max_abs_output'], 1e-30):.1e}"
        if r.get("unpool_check"):
            c = r["unpool_check"]
            rel += f" (at {c['size']}: {c['max_abs_diff'] / max(c['max_abs_output'], 1e-30):.1e})"
        agree = "" if r["outputs_agree"] else " **MISMATCH**"
        lines.append(
            f"| {r['model']} | {r['batch']} | {ms(r['netc_ms'])} | {ms(r['ort_ms'])} | "
            f"{r['speedup']:.2f}× | {met} | {r['netc_gflops']:.1f} | {peak} | {rel}{agree} | "
            f"{r['netc_peak_rss'] / 2**20:.0f} MiB | {r['ort_peak_rss'] / 2**20:.0f} MiB | "
            f"{'/'.join('?' if v is None else f'{v:.0f}' for v in r['core_round_trip_ns'])} |"
        )
    lines += [
        "",
        "Peak RSS: a fresh Python process (with NumPy) running only that engine. core↔core: the round "
        "trip of a cache line between CPUs 0 and 1 before/after the row's timing; rows where it is "
        "several times the machine's usual figure ran with the host's vCPUs far apart, where two-thread "
        "times are slower (netc's more than ORT's).",
    ]
    if any(r.get("unpool_check") for r in rows):
        lines += [
            "",
            "Models with max unpooling (SegNet) are also compared at a small size, which decides "
            "agreement: unpooling moves each value to its window's maximum, and a window whose two "
            "largest values differ by less than float32 rounding may be decided differently by the two "
            "engines, which moves that value (docs/performance.md#segmentation).",
        ]
    typed = [r for r in rows if r.get("by_type")]
    if typed:
        lines += [
            "",
            "Time per layer type: sums of per-layer medians, from `netc bench`'s per-layer profile and "
            "ONNX Runtime's node profile (separate runs from the timing above; the profiles' own timing "
            "overhead can make the sums exceed the totals on runs well under a millisecond). "
            "ORT/netc > 1: netc is faster; — : the engine has no layer of that type (e.g. a pool netc "
            "fused into the conv before it, or ORT's layout conversions).",
            "",
            "| model | batch | layer type | netc ms | ORT ms | ORT/netc |",
            "|---|---:|---|---:|---:|---:|",
        ]
        for r in typed:
            kinds = sorted(r["by_type"].items(), key=lambda kv: -max(kv[1].values()))
            for kind, t in kinds:
                both = t["netc_ms"] > 0 and t["ort_ms"] > 0
                ratio = f"{t['ort_ms'] / t['netc_ms']:.2f}" if both else "—"
                lines.append(
                    f"| {r['model']} | {r['batch']} | {kind} | {type_ms(t['netc_ms'])} | {type_ms(t['ort_ms'])} | {ratio} |"
                )
    return "\n".join(lines) + "\n"


# Untimed running at the start of each block, in seconds: longer than the
# other engine's worker threads go on spinning after its block. At 50 ms,
# on a Zen 4 machine, the first engine's spinning still overlapped the
# second's timed runs: deep_convnet at batch 1 timed netc at 0.184 ms and
# ONNX Runtime at 0.155 ms, against 0.107 and 0.104 ms at 200 ms (and
# 0.110 and 0.116 ms at 1 s), 2 threads, one process.
SETTLE_S = 0.2


def rounds_of(args):
    return max(1, args.iters // args.block)


def cpu_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        engine, workdir, threads, batch, iters = sys.argv[2:7]
        child(engine, workdir, int(threads), int(batch), int(iters))
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n", 2)[2])
    p.add_argument("models", nargs="+", help="model name in models/ or .net path, optionally :BATCH[,BATCH]")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--iters", type=int, default=20, help="timed runs of each engine")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--block", type=int, default=5, help="back-to-back timed runs per engine and round")
    p.add_argument("--seed", type=int, default=1, help="random-weight seed")
    p.add_argument("--out", help="directory for vs_onnxruntime.md and vs_onnxruntime.json")
    p.add_argument("--by-type", action="store_true",
                   help="also profile both engines per layer and compare time per layer type")
    p.add_argument("--netc", default=os.path.join(ROOT, "target", "release", "netc"))
    p.add_argument("--runtime-lib", default=os.path.join(ROOT, "target", "release", "libnetc_runtime.a"))
    args = p.parse_args()
    for path in (args.netc, args.runtime_lib):
        if not os.path.exists(path):
            sys.exit(f"{path} not found: run `cargo build --release` first")
    import onnxruntime

    bench = json.loads(sh(args.netc, "bench", model_path("deep_convnet"), "--iters", "1", "--warmup", "0",
                          "--threads", str(args.threads), "--format", "json"))
    peak = bench["machine"]["peak_gflops"]
    probe_dir = tempfile.TemporaryDirectory(prefix="netc-round-trip-")
    args.round_trip = round_trip_probe(probe_dir.name) if args.threads > 1 else None
    rows = []
    for spec in args.models:
        name, _, batches = spec.partition(":")
        for batch in [int(b) for b in (batches or "1").split(",")]:
            print(f"{name} batch {batch} ...", file=sys.stderr, flush=True)
            rows.append(compare(model_path(name), batch, args, peak))
    meta = {"onnxruntime": onnxruntime.__version__, "cpu": cpu_name(), "threads": args.threads,
            "iters": rounds_of(args) * args.block, "block": args.block, "peak_gflops": peak}
    table = markdown(rows, meta)
    print(table)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "vs_onnxruntime.md"), "w") as f:
            f.write("# vs ONNX Runtime\n\n" + table)
        with open(os.path.join(args.out, "vs_onnxruntime.json"), "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=2)
    if not all(r["outputs_agree"] for r in rows):
        sys.exit("outputs disagree beyond the tolerance")


if __name__ == "__main__":
    main()
