"""Runs every benchmark, each in its own subprocess, collects their JSON into benchmarks/results.json and
regenerates the tables of benchmarks/RESULTS.md.

Usage: python -m benchmarks.run_all [--only matmul train_step ...] [--skip openclip ...] [--quick]
                                    [--setup_openclip] [--timeout 1800]

* Each benchmark writes its JSON with `--out`; one that fails or times out is recorded as
  {"error": ...} and the others still run.
* open_clip runs in its own environment (default /tmp/bench-venv, or $SIGLIP_RINS_BENCH_VENV).  When it is
  missing the open_clip entry says 'not installed'; `--setup_openclip` creates it first (the commands of
  benchmarks/README.md; several GB, minutes).
* RESULTS.md: the header (machine, date, versions, command) and the tables between the markers are regenerated;
  the hand-written analysis between `<!-- analysis -->` and `<!-- /analysis -->` is kept.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

from benchmarks import _util as U  # noqa: E402

# name -> (module, extra args, extra args with --quick)
BENCHMARKS = {
  "matmul": ("benchmarks.bench_matmul", [], ["--repeats", "3", "--rounds", "1"]),
  # AB and A^3B (scan and unroll) plus the XLA flag sets; A^2B is left to section 9 (recursion cost), so that the
  # whole suite stays within ~15 minutes on an idle 2-core machine
  "train_step": (
    "benchmarks.bench_train_step",
    ["--xla_variants", "--signatures", "AB", "A^3B"],
    ["--rounds", "2", "--steps_per_round", "1", "--signatures", "AB", "A^3B"],
  ),
  "memory": ("benchmarks.bench_memory", [], []),
  "inference": ("benchmarks.bench_inference", [], ["--images", "128", "--repeats", "2", "--lm_len", "32"]),
  "openclip": ("benchmarks.bench_openclip", [], ["--rounds", "2", "--steps_per_round", "1", "--no_compile"]),
  "input_pipeline": ("benchmarks.bench_input_pipeline", [], ["--batches", "5"]),
  "chunked_loss": ("benchmarks.bench_chunked_loss", [], ["--batches", "256,1024"]),
  # scan_remat (carry-only remat) is the form closest to the compile target
  "recursion": (
    "benchmarks.bench_recursion",
    ["--loops", "unroll", "scan", "auto", "scan_remat"],
    ["--rounds", "1", "8", "--repeats", "1", "--compile_repeats", "1"],
  ),
  "precision": ("benchmarks.bench_precision", [], ["--rounds", "2", "--steps_per_round", "1"]),
  "precision_curve": ("benchmarks.bench_precision", ["--curve"], ["--curve_steps", "40"]),
  "stochastic": ("benchmarks.bench_stochastic", [], ["--steps", "2", "--rounds", "1"]),
  # the same with per-round remat: a skipped round then keeps no residuals (only its carry)
  "stochastic_remat": ("benchmarks.bench_stochastic", ["--remat", "full"], ["--steps", "2", "--rounds", "1"]),
  # B/16 A^3B with the bf16 policy on a GPU/TPU; the reduced 'small' size on a CPU
  "mfu": ("benchmarks.bench_mfu", ["--size", "auto"], []),
  # where the bf16-policy AB step's time goes (dots by kind, converts/transposes, time shares from a trace)
  "profile": ("benchmarks.profile_step", ["--precision", "bfloat16", "--trace"], []),
  # page faults and system time per step with the host memory mode on and off (siglip_rins/host_memory.py)
  "host_memory": ("benchmarks.bench_host_memory", [], ["--steps", "2", "--warmup", "1"]),
}
OPENCLIP_SETUP = [
  "python3.11 -m venv {venv}",
  "{venv}/bin/pip install -q torch==2.14.1 torchvision==0.29.1 numpy",
  "{venv}/bin/pip install -q --no-deps open-clip-torch timm ftfy",
  "{venv}/bin/pip install -q regex wcwidth huggingface_hub safetensors pyyaml tqdm",
]


def setup_openclip(venv: str) -> None:
  for cmd in OPENCLIP_SETUP:
    cmd = cmd.format(venv=venv)
    print(f"[run_all] {cmd}", flush=True)
    subprocess.run(cmd, shell=True, check=True)


def run_one(name: str, quick: bool, timeout: float, out_dir: str, run_id: str = "") -> dict:
  module, args, quick_args = BENCHMARKS[name]
  if not os.path.exists(os.path.join(ROOT, *module.split(".")) + ".py"):
    return {"benchmark": name, "skipped": True, "reason": f"{module} does not exist"}
  out = os.path.join(out_dir, f"{name}.json")
  cmd = [sys.executable, "-m", module, *args, *(quick_args if quick else []), "--out", out]
  env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
  t0 = time.perf_counter()
  print(f"[run_all] {' '.join(cmd)}", flush=True)
  # every section records when and where it ran (date, CPU model, load averages before/after), also the
  # benchmarks that do not record it themselves, so a table merged from an earlier run says so
  ctx = {"run_id": run_id, "context_start": U.context()}
  try:
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
  except subprocess.TimeoutExpired:
    return {
      "benchmark": name, "error": f"timed out after {timeout:.0f} s", "command": " ".join(cmd), **ctx,
      "context_end": U.context(),
    }  # fmt: skip
  seconds = time.perf_counter() - t0
  ctx["context_end"] = U.context()
  if proc.returncode or not os.path.exists(out):
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
    return {
      "benchmark": name,
      "error": f"exit code {proc.returncode}: " + " | ".join(tail),
      "command": " ".join(cmd),
      "wall_s": seconds,
      **ctx,
    }
  with open(out) as f:
    result = json.load(f)
  result["run_id"] = run_id
  for k in ("context_start", "context_end"):
    result.setdefault(k, ctx[k])
  result["command"] = " ".join(cmd[1:])
  result["wall_s"] = round(seconds, 1)
  print(f"[run_all] {name}: done in {seconds:.0f} s", flush=True)
  return result


# ----------------------------------------------------------------------------------------------- RESULTS.md
def _g(x, digits=3):
  if x is None:
    return "n/a"
  if isinstance(x, bool):
    return "yes" if x else "no"
  if isinstance(x, float):
    return f"{x:.{digits}g}" if abs(x) < 1e4 else f"{x:.4g}"
  return str(x)


def _met(ok) -> str:
  return "**met**" if ok else "**missed**"


def _err(r) -> str:
  if r is None:
    return "not run\n"
  if r.get("skipped"):
    return f"skipped: {r.get('reason')}\n"
  if "error" in r:
    return f"failed: `{r['error']}`\n"
  return ""


def render_tables(results: dict) -> str:
  L = []
  mm = results.get("matmul")
  L.append("## 1. Matmul limit (jitted 2048^3)\n")
  if _err(mm):
    L.append(_err(mm))
  else:
    L.append(_ctx(mm))
    L += ["| dtype | GFLOP/s (median) | GFLOP/s (best call) |", "|---|---|---|"]
    for dt in ("float32", "bfloat16"):
      L.append(f"| {dt} | {mm[dt]['flops_per_s'] / 1e9:.1f} | {mm[dt]['best_flops_per_s'] / 1e9:.1f} |")
    L.append(f"\nbf16 (bf16 inputs, f32 accumulation) / f32 = {mm['bf16_over_f32']:.2f}.\n")
  ts = results.get("train_step")
  L.append("## 2. Training step, bench config (target: fraction of matmul peak >= 0.75)\n")
  if _err(ts):
    L.append(_err(ts))
  else:
    L.append(_ctx(ts))
    L.append(
      f"Peak in the same process (median of rounds): {ts['peak_flops_per_s_median'] / 1e9:.1f} GFLOP/s "
      f"({ts['peak_dtype']}); per round: "
      + ", ".join(f"{p / 1e9:.0f}" for p in ts["peak_flops_per_s_rounds"])
      + " GFLOP/s.\n"
    )
    L += [
      "| signature | loop | GFLOP/step | step s (median) | examples/s | achieved GFLOP/s | fraction of peak "
      "(wall, per round) | fraction (CPU time) | step time / AB | compile+1st step s | target |",
      "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in ts["entries"]:
      L.append(
        f"| {e['signature']} | {e['loop']} | {e['flops_per_step'] / 1e9:.1f} | {e['step_s_median']:.2f} | "
        f"{e['examples_per_s']:.1f} | {e['achieved_flops_per_s'] / 1e9:.1f} | {e['fraction_of_peak']:.2f} | "
        f"{e['fraction_of_peak_cpu_time']:.2f} | {e['step_time_over_first']:.2f} | "
        f"{e['compile_plus_first_step_s']:.1f} | {_met(e['fraction_of_peak'] >= 0.75)} |"
      )
    if ts.get("xla_variants"):
      L += [
        "",
        "XLA:CPU flag sets on the AB step (separate worker processes taking turns):",
        "",
        "| variant | XLA_FLAGS | step s (median) | speed-up over default | f32 2048^3 matmul GFLOP/s | loss after"
        " the steps |",
        "|---|---|---|---|---|---|",
      ]
      for name, v in ts["xla_variants"].items():
        gemm = v.get("matmul_f32_flops_per_s")
        L.append(
          f"| {name} | `{v['flags'] or '(none)'}` | {v['step_s_median']:.2f} | {v['speedup_over_default']:.2f} "
          f"| {'n/a' if gemm is None else f'{gemm / 1e9:.0f}'} | {v['loss_after_steps']:.5f} |"
        )
    L.append("")
  oc = results.get("openclip")
  L.append(
    "## 3. Versus open_clip in float32 (PyTorch CPU eager and torch.compile), same run (goal: >= 1.0x the faster)\n"
  )
  if _err(oc):
    L.append(_err(oc))
  else:
    L.append(_ctx(oc))
    L += [
      "| implementation | params | step s (median) | examples/s | first step s | ours / theirs |",
      "|---|---|---|---|---|---|",
      f"| siglip_rins (JAX, jit) | {oc['ours']['params']:,} | {oc['ours']['step_s_median']:.2f} | "
      f"{oc['ours']['examples_per_s']:.1f} | {oc['ours']['compile_plus_first_step_s']:.1f} | 1 |",
    ]
    for m, s in oc["speedup"].items():
      o = oc["open_clip"][m]
      L.append(
        f"| open_clip {m} (torch {oc['open_clip']['torch']}) | {o['params']:,} | {o['step_s_median']:.2f} | "
        f"{o['examples_per_s']:.1f} | {o['first_step_s']:.1f} | {s:.2f} |"
      )
    L.append(
      f"\nAgainst the faster open_clip mode ({oc['faster_open_clip_mode']}): {oc['speedup_vs_faster']:.2f}x "
      f"-> {_met(oc['met'])}. Parameter difference (open_clip - ours): {oc['param_difference']:+,}.\n"
    )
  me = results.get("memory")
  L.append("## 4. Training memory (compiled step's memory_analysis; target: A^3B with remat <= 1.3x AB)\n")
  if _err(me):
    L.append(_err(me))
  else:
    L.append(_ctx(me))
    L += [
      "| signature | loop | remat | args MB | output MB | alias MB | temp MB | total MB | total / AB | temp / AB |",
      "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in me["entries"]:
      L.append(
        f"| {e['signature']} | {e['loop']} | {e['remat']} | {e['argument_bytes'] / 2**20:.1f} | "
        f"{e['output_bytes'] / 2**20:.1f} | {e['alias_bytes'] / 2**20:.1f} | {e['temp_bytes'] / 2**20:.1f} | "
        f"{e['total_bytes'] / 2**20:.1f} | {e['total_over_AB']:.2f} | {e['temp_over_AB']:.2f} |"
      )
    L.append(f"\nA^3B with remat / AB = {me['remat_ratio']:.2f} -> {_met(me['met'])}.\n")
  inf = results.get("inference")
  L.append("## 5. Inference\n")
  if _err(inf):
    L.append(_err(inf))
  else:
    L.append(_ctx(inf))
    zs = inf["zero_shot"]
    L += [
      f"Zero-shot classification, {zs['signature']} bench two-tower model, {zs['images']} images, "
      f"{zs['classes']} cached class embeddings:\n",
      "| rounds | images/s | relative to r=1 | GFLOP/image |",
      "|---|---|---|---|",
    ]
    for e in zs["entries"]:
      L.append(
        f"| {e['rounds']} | {e['images_per_s']:.1f} | {e['images_per_s_over_r1']:.2f} | "
        f"{e['forward_flops_per_image'] / 1e9:.3f} |"
      )
    lm = inf["lm_decode"]
    L += [
      "",
      f"LM decoding ({lm['model']}, vocab {lm['vocab']}, {lm['signature']}, batch {lm['batch']}, "
      f"{lm['length']} tokens, greedy, one jitted scan):\n",
      "| KV sharing | KV-cache bytes | tokens/s |",
      "|---|---|---|",
    ]
    for e in lm["entries"]:
      L.append(f"| {e['kv_sharing']} | {e['cache_bytes']:,} | {e['tokens_per_s']:.0f} |")
    L.append(
      f"\nCache shared/full = {lm['cache_ratio_shared_over_full']:.2f}; tokens/s shared/full = "
      f"{lm['tokens_per_s_shared_over_full']:.2f}.\n"
    )
  L += render_new_sections(results)
  L += render_profile(results.get("profile"))
  L += render_host_memory(results.get("host_memory"))
  others = [k for k in ("input_pipeline", "chunked_loss") if k in results]
  if others:
    L.append("## Other benchmarks (owned by other files; raw JSON in results.json)\n")
    for k in others:
      r = results[k]
      L.append(f"- **{k}**: " + (_err(r).strip() or f"ran in {r.get('wall_s', '?')} s, `{r.get('command', '')}`"))
    L.append("")
  return "\n".join(L)


def _ctx(r: dict) -> str:
  """'machine, load average before -> after, date' of a result that recorded U.context()."""
  a, b = r.get("context_start") or {}, r.get("context_end") or {}
  if not a:
    return "Measured: date, machine and load not recorded (a result from before run_all recorded them).\n"
  return (
    f"Measured {a.get('date_utc')} UTC on {a.get('cpu_model')} ({a.get('cores_available')} cores; "
    f"{', '.join(a.get('cpu_matmul_flags') or []) or 'flags n/a'}), "
    f"load average {a.get('load_avg')} at the start, {b.get('load_avg')} at the end.\n"
  )


def render_device_mfu() -> list[str]:
  """The accelerator runs of bench_mfu recorded in benchmarks/results_mfu_*.json ('mfu_device_runs': one row per
  variant, each its own process), kept as measured: a CPU-only regeneration cannot re-measure them."""
  import glob

  L = []
  for path in sorted(glob.glob(os.path.join(os.path.dirname(os.path.abspath(__file__)), "results_mfu_*.json"))):
    with open(path) as f:
      rec = json.load(f)
    if rec.get("benchmark") != "mfu_device_runs":
      continue
    L += [
      f"Recorded on an accelerator ({os.path.basename(path)}): {rec.get('device')}; {rec.get('note')}.\n",
      "| variant | precision | attention | loop | remat | XLA_FLAGS | batch | step ms | examples/s | achieved "
      "TFLOP/s | bf16 matmul peak TFLOP/s (same process) | MFU | compile + 1st step s | cuDNN fmha |",
      "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rec["rows"]:
      L.append(
        f"| {r['variant']} | {r['precision']} | {r['attention']} | {r['loop']} | {r['remat']} | "
        f"`{r['xla_flags'] or '(none)'}` | {r['batch']} | {r['step_s_median'] * 1e3:.1f} | "
        f"{r['examples_per_s']:.0f} | {r['achieved_tflop_per_s']:.1f} | {r['bf16_matmul_peak_tflop_per_s']:.1f} | "
        f"{r['mfu']:.3f} | {r['compile_plus_first_step_s']:.1f} | {r['cudnn_fused_attention_calls']} |"
      )
    L.append("")
  return L


def render_new_sections(results: dict) -> list[str]:
  """Sections 6-10: MFU, mixed precision vs open_clip, bf16 loss curve, recursion cost, stochastic rounds."""
  L = []
  mfu = results.get("mfu")
  L.append("## 6. MFU (benchmarks/bench_mfu.py: SigLIP-RINS-B/16 A^3B, bf16 policy, data parallel)\n")
  if _err(mfu):
    L.append(_err(mfu))
  else:
    L.append(_ctx(mfu))
    L += [
      "| size | signature | precision | devices (kind) | mesh | batch | step s | examples/s | achieved TFLOP/s | "
      "bf16 matmul peak TFLOP/s | MFU |",
      "|---|---|---|---|---|---|---|---|---|---|---|",
      f"| {mfu['size']} | {mfu['signature']} | {mfu['precision']} | {mfu['devices']} ({mfu['device_kind']}) | "
      f"{mfu['mesh']} | {mfu['batch']} | {mfu['step_s_median']:.3f} | {mfu['examples_per_s']:.1f} | "
      f"{mfu['achieved_tflop_per_s']:.3f} | {mfu['bf16_matmul_peak_tflop_per_s']:.3f} | {mfu['mfu']:.3f} |",
      "",
    ]
    if mfu.get("platform") == "cpu":
      L.append(
        "On a CPU this is the reduced 'small' size (a smoke run of the command, not an MFU figure). On a GPU/TPU: "
        "`python -m benchmarks.bench_mfu` (B/16 A^3B, 256 examples per device).\n"
      )
  L += render_device_mfu()
  pr = results.get("precision")
  L.append(
    f"## 7. Mixed precision vs open_clip (bench config, AB, batch {(pr or {}).get('batch', 64)}; goals: bf16 "
    "policy >= 1.2x open_clip autocast bf16, float32 >= 1.0x open_clip eager float32)\n"
  )
  if _err(pr):
    L.append(_err(pr))
  else:
    L.append(_ctx(pr))
    rss = pr.get("maxrss_mb", {})
    mb = lambda k: f"{rss[k]:.0f}" if k in rss else ""
    L += [
      "| implementation | host memory | step s (median) | examples/s | fraction of its matmul peak | compile / first "
      "step s | peak RSS MB (process) |",
      "|---|---|---|---|---|---|---|",
    ]
    for p, o in pr["ours"].items():
      L.append(
        f"| siglip_rins precision={p} | reuse (default) | {o['step_s_median']:.3f} | {o['examples_per_s']:.1f} | "
        f"{o['fraction_of_peak']:.2f} | {o['compile_plus_first_step_s']:.1f} | {mb('ours')} |"
      )
    for p, o in pr["ours"].items():
      if "system_step_s_median" in o:
        L.append(
          f"| siglip_rins precision={p} | system (SIGLIP_RINS_HOST_MEMORY=system) | {o['system_step_s_median']:.3f} | "
          f"{pr['batch'] / o['system_step_s_median']:.1f} | | | {mb('ours_system')} |"
        )
    oc = pr.get("open_clip") or {}
    if oc.get("skipped"):
      L.append(f"\nopen_clip: {oc.get('reason')}\n")
    else:
      for m, label in (("eager", "eager float32"), ("autocast", "eager + torch.autocast(bfloat16)")):
        o = oc[m]
        L.append(
          f"| open_clip {label} (torch {oc.get('torch')}) | defaults | {o['step_s_median']:.3f} | "
          f"{pr['batch'] / o['step_s_median']:.1f} | | {o['first_step_s']:.1f} | {mb('open_clip_default')} |"
        )
        if "heap_step_s_median" in o:
          L.append(
            f"| open_clip {label} (torch {oc.get('torch')}) | glibc heap setting ({', '.join(f'{k}={v}' for k, v in oc.get('heap_env', {}).items())}) "
            f"| {o['heap_step_s_median']:.3f} | {pr['batch'] / o['heap_step_s_median']:.1f} | | | "
            f"{mb('open_clip_heap')} |"
          )
      sys_ratio = " ".join(
        f"{p} {o['speedup_over_system']:.2f}x;" for p, o in pr["ours"].items() if "speedup_over_system" in o
      )
      L.append(
        f"\nMatmul peaks in the same rounds: f32 {pr['matmul_peak_gflop_per_s']['float32']:.0f}, bf16 (f32 "
        f"accumulation) {pr['matmul_peak_gflop_per_s']['bfloat16']:.0f} GFLOP/s. Ours bf16 / ours f32: "
        f"{pr['bf16_over_f32_ours']:.2f}x. Host memory 'reuse' over 'system' (ours): {sys_ratio.rstrip(';')}. "
        f"Against open_clip (the faster of its two environments in each round): ours bf16 / autocast "
        f"{pr['speedup_bf16_vs_open_clip_autocast']:.2f}x -> {_met(pr['met_bf16'])}; ours f32 / eager f32 "
        f"{pr['speedup_f32_vs_open_clip_eager']:.2f}x -> {_met(pr['met_f32'])} (medians of per-round ratios"
        + (
          f"; against its defaults only: {pr['speedup_bf16_vs_open_clip_autocast_default_env']:.2f}x / "
          f"{pr['speedup_f32_vs_open_clip_eager_default_env']:.2f}x"
          if "speedup_bf16_vs_open_clip_autocast_default_env" in pr
          else ""
        )
        + ").\n"
      )
  cu = results.get("precision_curve")
  L.append("## 8. Loss curve, bf16 policy vs float32 (benchmarks/bench_precision.py --curve)\n")
  if _err(cu):
    L.append(_err(cu))
  else:
    L.append(_ctx(cu))
    end = cu["final_loss_mean_last_10pct"]
    L += [
      f"Model '{cu['model']}', batch {cu['batch']}, {cu['steps']} Adam steps over {cu['n_batches']} fixed batches "
      "of learnable random pairs (256 classes: image pattern + noise, fixed caption); noise reference: float32 "
      "with another init seed.\n",
      "| run | loss, mean of the last 10% of steps | mean abs. difference to float32 over the curve |",
      "|---|---|---|",
      f"| float32 | {end['float32']:.4f} | 0 |",
      f"| bfloat16 policy | {end['bfloat16']:.4f} | {cu['mean_abs_diff_bf16_vs_f32']:.4f} |",
      f"| float32, init seed 1 | {end['float32_seed1']:.4f} | {cu['mean_abs_diff_seed1_vs_seed0']:.4f} |",
      "",
      f"bf16 - f32 at the end: {cu['bf16_minus_f32_final']:+.4f}; seed noise: {cu['seed_noise_final']:+.4f} -> "
      f"{'within' if cu['within_noise'] else '**outside**'} noise.\n",
    ]
  rc = results.get("recursion")
  L.append(
    "## 9. Recursion cost (benchmarks/bench_recursion.py; targets: step(r)/step(1) within 5% of the FLOPs "
    "ratio, compile(8)/compile(1) <= 1.25)\n"
  )
  if _err(rc):
    L.append(_err(rc))
  else:
    L.append(_ctx(rc))
    L += [
      f"Bench image tower, batch {rc['batch']}, {rc.get('precision', rc.get('dtype'))}.\n",
      "| loop | r | compile s | step s | GFLOP/s | step ratio | FLOPs ratio | step / FLOPs | compile ratio | "
      "round cost / unrolled round |",
      "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rc["rows"]:
      L.append(
        f"| {row['loop']} | {row['r']} | {row['compile_s']:.2f} | {row['step_s']:.3f} | {row['gflop_per_s']} | "
        f"{row['step_ratio']:.2f} | {row['flops_ratio']:.2f} | {row['step_vs_flops']:.2f} | "
        f"{row['compile_ratio']:.2f} | {_g(row.get('round_cost_vs_unroll'))} |"
      )
    L += [
      "",
      "r = 1 runs no loop whatever the loop form: it is compiled and timed once and is every form's baseline "
      "(results from before this change timed it per form). 'round cost / unrolled round' = (t(r) - t(1)) / "
      "(t_unroll(r) - t(1)): what the form's rounds cost against the same rounds as separate layers, without the "
      "step's fixed costs (Adam update, embedding, pooling: not proportional to FLOPs, which is why step / FLOPs "
      "falls below 1 for every form).\n",
      "| loop | max step / FLOPs | step target (<= 1.05) | max compile ratio (r > 1) | compile target (every r) |",
      "|---|---|---|---|---|",
    ]
    for loop, sm in rc["summary"].items():
      L.append(
        f"| {loop} | {sm.get('max_step_vs_flops', sm['worst_step_vs_flops']):.2f} | {_met(sm['step_target_met'])} | "
        f"{sm.get('max_compile_ratio', sm['compile_ratio_at_max_r']):.2f} | {_met(sm['compile_target_met'])} |"
      )
    L.append("")
  L.append("## 10. Stochastic rounds timed (benchmarks/bench_stochastic.py; target: time follows FLOPs within 5%)\n")
  for key in ("stochastic", "stochastic_remat"):
    st = results.get(key)
    if st is None and key == "stochastic_remat":
      continue
    if _err(st):
      L.append(_err(st))
      continue
    L.append(_ctx(st))
    L += [
      f"Bench image tower A^{st['r']}B, loop={st['loop']}, remat={st.get('remat', False)}, {st['precision']}, "
      f"batch {st['batch']}.\n",
      "| p_s | rounds drawn (mean) | expected | step s (mean) | time / time(p_s=0) | drawn FLOPs / FLOPs(r) | "
      "time / FLOPs | target | rounds beyond the first: time / FLOPs | time / deterministic A^kB at the drawn k |",
      "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in st["rows"]:
      L.append(
        f"| {row['p_s']} | {row['rounds_drawn_mean']:.2f} | {row['rounds_expected']:.2f} | {row['step_s_mean']:.3f} "
        f"| {row['time_ratio']:.3f} | {row['drawn_flops_ratio']:.3f} | {row['time_vs_flops']:.3f} | "
        f"{_met(row['within_5pct'])} | {_g(row.get('marginal_time_vs_flops'))} | "
        f"{_g(row.get('time_vs_deterministic'))} |"
      )
    det = st.get("step_s_deterministic")
    if det:
      shown = ", ".join(f"A^{k}B {v:.3f} s" for k, v in det.items())
      L.append(
        f"\nDeterministic steps in the same rounds: {shown}. 'rounds beyond the first' compares only the rounds "
        "above A^1B (time above A^1B over FLOPs above A^1B); the last column compares each stochastic step with "
        "the deterministic A^kB step of the k it drew. Both take out the step's fixed costs (the Adam update, "
        "loss, dispatch: not proportional to FLOPs), which the whole-step 'time / FLOPs' keeps."
      )
    L.append("")
  return L


def render_host_memory(hm) -> list[str]:
  """Section 12: benchmarks/bench_host_memory.py (page faults, system time per step, per host memory mode)."""
  L = ["## 12. Host memory (benchmarks/bench_host_memory.py; siglip_rins/host_memory.py)\n"]
  if _err(hm):
    return L + [_err(hm)]
  L.append(_ctx(hm))
  L.append(f"Bench config AB step, batch {hm['batch']}, {hm['steps']} steps timed per mode, one process per mode.\n")
  L.append(
    "| mode | precision | step s (median) | minor page faults / step | system s / step | user s / step | peak RSS MB |"
  )
  L.append("|---|---|---|---|---|---|---|")
  for mode in ("reuse", "system"):
    w = hm[mode]
    for prec, speed in hm["reuse_speedup"].items():
      r = w[prec]
      L.append(
        f"| {mode} | {prec} | {r['step_s_median']:.3f} | {r['minor_faults_per_step']:,.0f} | "
        f"{r['system_s_per_step']:.3f} | {r['user_s_per_step']:.3f} | {w['maxrss_mb']:.0f} |"
      )
  shown = ", ".join(f"{prec} {v:.2f}x" for prec, v in hm["reuse_speedup"].items())
  L.append(f"\nStep time 'system' / 'reuse': {shown}.\n")
  return L


def render_profile(pf) -> list[str]:
  """Section 11: benchmarks/profile_step.py on the bf16-policy AB step."""
  L = ["## 11. Where the bf16-policy step's time goes (benchmarks/profile_step.py --precision bfloat16 --trace)\n"]
  if _err(pf):
    return L + [_err(pf)]
  L.append(_ctx(pf))
  L += [
    "Dots of the compiled step (where they run, operand dtypes after XLA's rewrites):\n",
    "| dots | kind |",
    "|---|---|",
  ]
  L += [f"| {n} | {k} |" for k, n in pf["dots"].items()]
  t = pf.get("time_ms_per_step") or {}
  total = sum(t.values()) or 1.0
  L += [
    "",
    "Top-level instructions by kind (bytes of operands and results: a load-independent proxy for memory traffic; "
    "time: profiler events per step, summed over threads):\n",
    "| kind | count | MB | ms/step | share of time |",
    "|---|---|---|---|---|",
  ]
  order = sorted(pf["ops"].items(), key=lambda kv: -(t.get(kv[0], 0.0) if t else kv[1]["mbytes"]))
  for k, v in order[:15]:
    ms = t.get(k)
    L.append(
      f"| {k} | {v['count']} | {v['mbytes']:.0f} | {'' if ms is None else f'{ms:.1f}'} | "
      f"{'' if ms is None else f'{100 * ms / total:.1f}%'} |"
    )
  L.append("")
  return L


def render(results: dict, command: str, old: str) -> str:
  mach = results.get("_machine") or U.machine_info()  # where the run happened, not where it is rendered
  analysis = ""
  if "<!-- analysis -->" in old and "<!-- /analysis -->" in old:
    analysis = old[old.index("<!-- analysis -->") : old.index("<!-- /analysis -->") + len("<!-- /analysis -->")]
  else:
    analysis = "<!-- analysis -->\n<!-- /analysis -->"
  run = results.get("_run") or {}
  a, b = run.get("context_start") or {}, run.get("context_end") or {}
  sections = [k for k in BENCHMARKS if isinstance(results.get(k), dict)]
  earlier = [k for k in sections if not run.get("run_id") or results[k].get("run_id") != run["run_id"]]
  head = [
    "# Benchmark results",
    "",
    (f"- date: {a.get('date_utc')} to {b.get('date_utc')} UTC" if a else "- date: not recorded (an older run)")
    + (" (a --quick smoke run: fewer rounds and configurations)" if run.get("quick") else ""),
    f"- machine: {mach.get('cpu_model')} ({mach.get('cores_available')} cores available; "
    f"{', '.join(a.get('cpu_matmul_flags') or []) or 'flags n/a'}); load average "
    + (
      f"at the start {a.get('load_avg')}, at the end {b.get('load_avg')}" if a else f"at the end {mach.get('load_avg')}"
    )
    + " (every section below gives its own, before and after)",
    f"- sections measured in this run: {', '.join(k for k in sections if k not in earlier) or 'none'}"
    + (f"; carried over from earlier runs (see their dates): {', '.join(earlier)}" if earlier else ""),
    f"- versions: python {mach.get('python')}, jax {mach.get('jax')}, flax {mach.get('flax')}, "
    f"optax {mach.get('optax')}, numpy {mach.get('numpy')}"
    + (f", torch {mach['torch']} (project venv)" if mach.get("torch") else "")
    + (
      f"; open_clip env: torch {results['openclip']['open_clip']['torch']}, open_clip "
      f"{results['openclip']['open_clip']['open_clip']}"
      if results.get("openclip", {}).get("open_clip")
      else ""
    ),
    f"- command: `{command}` (wall time {results.get('_wall_s', '?')} s)",
    "",
    "Figures are medians over several steps; every ratio is taken between figures measured in one process (or "
    "in worker processes taking turns), so machine load affects both sides alike.",
    "",
  ]
  return "\n".join(head) + "\n<!-- tables -->\n" + render_tables(results) + "\n<!-- /tables -->\n\n" + analysis + "\n"


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), default=None)
  parser.add_argument("--skip", nargs="+", choices=list(BENCHMARKS), default=[])
  parser.add_argument("--quick", action="store_true", help="fewer rounds and configurations (a smoke run)")
  parser.add_argument("--setup_openclip", action="store_true", help="create the open_clip environment if missing")
  parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per benchmark")
  parser.add_argument(
    "--add",
    nargs="+",
    default=[],
    metavar="NAME=JSON",
    help="merge a result a benchmark wrote separately (its --out file) instead of running it",
  )
  parser.add_argument("--results", default=os.path.join(HERE, "results.json"))
  parser.add_argument("--markdown", default=os.path.join(HERE, "RESULTS.md"))
  args = parser.parse_args(argv)
  names = [n for n in (args.only or list(BENCHMARKS)) if n not in args.skip]
  added = {}
  for item in args.add:
    name, _, path = item.partition("=")
    if name not in BENCHMARKS or not path:
      raise ValueError(f"--add {item!r}: expected NAME=JSON with NAME one of {sorted(BENCHMARKS)}")
    if not os.path.exists(path):
      raise FileNotFoundError(f"--add {item!r}: {path} does not exist")
    with open(path) as f:
      added[name] = dict(json.load(f), command=f"(run separately, merged with --add) {path}")
  names = [n for n in names if n not in added]
  from benchmarks.bench_openclip import BENCH_VENV, open_clip_available, venv_python

  if "openclip" in names and args.setup_openclip and not open_clip_available(venv_python())[0]:
    setup_openclip(BENCH_VENV)
  import tempfile

  t0 = time.perf_counter()
  start = U.context()
  run_id = start["date_utc"]
  results = {}
  if os.path.exists(args.results) and (args.only or added):
    with open(args.results) as f:
      results = json.load(f)  # a partial run updates the entries it ran
  with tempfile.TemporaryDirectory() as tmp:
    for name in names:
      results[name] = run_one(name, args.quick, args.timeout, tmp, run_id)
  results.update(added)
  results["_wall_s"] = round(time.perf_counter() - t0, 1)
  results["_machine"] = U.machine_info()
  results["_run"] = dict(
    run_id=run_id, context_start=start, context_end=U.context(), ran=names, added=sorted(added), quick=args.quick
  )
  with open(args.results, "w") as f:
    json.dump(results, f, indent=1)
  old = open(args.markdown).read() if os.path.exists(args.markdown) else ""
  command = "python -m benchmarks.run_all " + " ".join(argv if argv is not None else sys.argv[1:])
  with open(args.markdown, "w") as f:
    f.write(render(results, command.strip(), old))
  print(f"[run_all] wrote {args.results} and {args.markdown} ({results['_wall_s']} s)")
  return results


if __name__ == "__main__":
  main()
