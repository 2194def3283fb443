"""autotune against Microsoft Olive 0.13: the same cold single pipeline, wall time and peak resident memory.

The pipeline (issue 15): LoRA r 8 on q_proj/v_proj, 60 steps of batch 8 (lr 1e-3, alpha 16, dropout 0.05,
seed 0, fp32 on the CPU) -> merge -> int4 ONNX (block 32, symmetric) with onnxruntime-genai's model builder,
no evaluator. Each side runs as a fresh process under ``/usr/bin/time -v`` (peak RSS) with fresh, empty
cache and output folders, alternating which goes first: autotune as ``autotune run --config``, Olive as
``olive run --config`` from its own virtual environment (``--olive-python``). Both train on the same rows
(autotune's training split, written to a JSON-lines file for Olive) with the same text, tokens and loss.
Goals: wall time autotune / Olive <= 0.5 and peak RSS autotune / Olive <= 0.8.

``--reruns N`` then runs each side's identical command again N times in its last cold run's folders (its
cache and output in place), alternating which goes first: the cached rerun (issue 22, goal autotune / Olive
<= 0.10), wall and CPU seconds per side.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import common

GOAL_TIME, GOAL_RSS, GOAL_RERUN = 0.5, 0.8, 0.10
# The pipeline of issue 15, the same for both models (tiny only checks that the machinery works).
PIPELINE: dict[str, Any] = {"r": 8, "alpha": 16, "lora_dropout": 0.05, "target_modules": ["q_proj", "v_proj"], "learning_rate": 1e-3,
                            "max_steps": 60, "batch_size": 8, "seed": 0, "source_max_len": 128, "block_size": 32}
# transformers' TrainingArguments both sides get (autotune's defaults, set explicitly on Olive's side,
# whose LoRA pass defaults to a constant schedule with 3% warm-up and gradient checkpointing).
TRAINING_ARGS: dict[str, Any] = {"max_steps": PIPELINE["max_steps"], "per_device_train_batch_size": PIPELINE["batch_size"],
                                 "seed": PIPELINE["seed"], "logging_steps": PIPELINE["max_steps"] // 2, "lr_scheduler_type": "linear",
                                 "warmup_steps": 0, "weight_decay": 0.0, "max_grad_norm": 1.0, "optim": "adamw_torch",
                                 "gradient_checkpointing": False}
TIME_BIN = shutil.which("time", path="/usr/bin:/bin")
# Without /usr/bin/time: a fresh wrapper process runs the command and reports its children's peak RSS.
RUSAGE_WRAPPER = ("import json, resource, subprocess, sys; rc = subprocess.call(sys.argv[2:]); "
                  "u = resource.getrusage(resource.RUSAGE_CHILDREN); "
                  "open(sys.argv[1], 'w').write(json.dumps({'max_rss_kb': u.ru_maxrss, 'user_s': u.ru_utime, 'sys_s': u.ru_stime})); "
                  "sys.exit(rc)")


# -- the autotune side ------------------------------------------------------------------------------
def autotune_config(model: str, work: Path) -> dict[str, Any]:
    """common.config with the pipeline's settings, no evaluator, no validation rows carved from the
    training split, and the loss on every token (as Olive's text-generation data trains)."""
    p = PIPELINE
    cfg = common.config(model, work, r=p["r"], alpha=p["alpha"], lora_dropout=p["lora_dropout"], target_modules=p["target_modules"],
                        learning_rate=p["learning_rate"], validation_size=0, loss_on="all", report_every=0,
                        training_args=dict(TRAINING_ARGS))
    cfg["data_configs"][0]["pre_process_data_config"]["source_max_len"] = p["source_max_len"]
    cfg["passes"]["build"]["block_size"] = p["block_size"]
    cfg["passes"]["build"]["is_symmetric"] = True
    # the builder's own rounding, as Olive's ModelBuilder: autotune's default (auto) would calibrate int4 by GPTQ
    cfg["passes"]["build"]["algo_config"] = "default"
    cfg["evaluators"] = {}  # engine.evaluator None: the single run trains, merges and builds, and evaluates nothing
    cfg["engine"]["evaluator"] = None
    return cfg


def run_autotune(model: str, work: Path) -> dict[str, Any]:
    config = work / "config.json"
    config.write_text(json.dumps(autotune_config(model, work), indent=2))
    result = measured([str(Path(sys.executable).with_name("autotune")), "run", "--config", str(config)], work, dict(os.environ))
    record = json.loads((work / "out" / "run.json").read_text())
    phases = {p["name"]: p["seconds"] for p in record["passes"]}
    phases["in_process_total"] = record["seconds"]
    result.update(phases=phases, output_mb=onnx_mb(work / "out" / "model"), train=autotune_training(work / "cache"))
    return result


def autotune_training(cache: Path) -> dict[str, Any]:
    log = next(cache.rglob("training_log.json"), None)
    stats = next(cache.rglob("train_stats.json"), None)
    out: dict[str, Any] = {}
    if log:
        values = json.loads(log.read_text())
        out.update(steps=values.get("steps"), rows=values.get("train_rows"), train_loss=values.get("training_loss"))
    if stats:
        out["train_runtime_s"] = json.loads(stats.read_text()).get("train_seconds")
    return out


# -- the Olive side ---------------------------------------------------------------------------------
def olive_template(model: str) -> str:
    """Olive's text template giving the token ids autotune trains on: autotune tokenises the prompt
    with the tokenizer's special tokens (a BOS where it adds one), then the answer and EOS; Olive's
    ``add_special_tokens`` would write "{bos} {text} {eos}" with spaces, so the tokens go into the
    template instead and it is off."""
    from autotune.models.loading import load_tokenizer

    tok = load_tokenizer(common.model_path(model))
    with_special = tok("x", add_special_tokens=True)["input_ids"]
    plain = tok("x", add_special_tokens=False)["input_ids"]
    bos = tok.bos_token if len(with_special) > len(plain) and with_special[0] == tok.bos_token_id else ""
    return bos + common.TEMPLATE + (tok.eos_token or "")


def olive_config(model: str, work: Path, train_file: Path, template: str, merge: str) -> dict[str, Any]:
    p = PIPELINE
    lora = {"type": "LoRA", "r": p["r"], "alpha": p["alpha"], "lora_dropout": p["lora_dropout"], "target_modules": p["target_modules"],
            # Olive's default is bfloat16; autotune trains in fp32 on the CPU.
            "torch_dtype": "float32", "train_data_config": "tones",
            "training_args": {**TRAINING_ARGS, "learning_rate": p["learning_rate"], "warmup_ratio": 0.0, "save_strategy": "no",
                              "disable_tqdm": True, "use_cpu": True, "logging_nan_inf_filter": False}}
    passes: dict[str, Any] = {"lora": lora}
    if merge == "pass":
        passes["merge"] = {"type": "MergeAdapterWeights"}
    passes["build"] = {"type": "ModelBuilder", "precision": "int4", "int4_block_size": p["block_size"], "int4_is_symmetric": True}
    return {
        "input_model": {"type": "HfModel", "model_path": str(common.model_path(model)), "task": "text-generation",
                        "load_kwargs": {"torch_dtype": "float32"}},
        "systems": {"local_system": {"type": "LocalSystem",
                                     "accelerators": [{"device": "cpu", "execution_providers": ["CPUExecutionProvider"]}]}},
        "data_configs": [{
            "name": "tones", "type": "HuggingfaceContainer",
            "load_dataset_config": {"data_name": "json", "data_files": str(train_file), "split": "train"},
            # one row = one sequence, padded per batch by the LoRA pass's collator (Olive's defaults: rows
            # joined into max_seq_len blocks, or every row padded to max_seq_len)
            "pre_process_data_config": {"strategy": "line-by-line", "text_template": template, "add_special_tokens": False,
                                        "max_seq_len": p["source_max_len"], "pad_to_max_len": False},
        }],
        "passes": passes,
        "host": "local_system", "target": "local_system",
        "search_strategy": False, "evaluate_input_model": False,
        "cache_dir": str(work / "cache"), "output_dir": str(work / "out"), "log_severity_level": 1,
    }


def olive_env(work: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        # Olive logs a telemetry heartbeat at start-up before it reads OLIVE_DISABLE_TELEMETRY; a CI marker
        # it checks first (TF_BUILD, Azure Pipelines'; nothing else installed reads it) turns it off before that.
        "OLIVE_DISABLE_TELEMETRY": "1", "TF_BUILD": "1", "OLIVE_TELEMETRY_CACHE_DIR": str(work / "telemetry"),
        # ModelBuilder uses the HF hub cache as the builder's scratch folder: a fresh one per run.
        "HF_HUB_CACHE": str(work / "hf_cache"),
    })
    return env


def run_olive(model: str, work: Path, olive_python: str, train_file: Path, template: str, merge: str) -> dict[str, Any]:
    config = work / "config.json"
    config.write_text(json.dumps(olive_config(model, work, train_file, template, merge), indent=2))
    cmd = [olive_python, "-m", "olive", "run", "--config", str(config), "--disable_telemetry"]
    result = measured(cmd, work, olive_env(work))
    footprint = work / "out" / "footprint.json"
    if not footprint.is_file() or not (work / "out" / "genai_config.json").is_file():
        # Olive logs a failed pass and exits 0
        raise RuntimeError(f"Olive produced no model; see {work / 'stderr.log'} and {work / 'stdout.log'}")
    nodes = json.loads(footprint.read_text())  # {model id: node}
    names = {"lora": "lora", "mergeadapterweights": "merge", "modelbuilder": "build"}  # from_pass: the pass type, lower case
    phases = {names.get(n["from_pass"].lower(), n["from_pass"]): n["end_time"] - n["start_time"]
              for n in nodes.values() if n.get("from_pass")}
    result.update(phases=phases, output_mb=onnx_mb(work / "out"), train=olive_training(work))
    return result


def olive_training(work: Path) -> dict[str, Any]:
    """Steps, loss and train runtime from the Trainer's printed log dicts."""
    text = (work / "stdout.log").read_text() + (work / "stderr.log").read_text()
    out: dict[str, Any] = {}
    for key, name in (("train_runtime", "train_runtime_s"), ("train_loss", "train_loss"), ("epoch", "epochs")):
        found = re.findall(rf"'{key}': '?([0-9.eE+-]+)", text)
        if found:
            out[name] = float(found[-1])
    return out


# -- measuring --------------------------------------------------------------------------------------
def measured(cmd: list[str], work: Path, env: dict[str, str]) -> dict[str, Any]:
    """Run ``cmd`` in ``work``; its wall time (here) and peak RSS (of the largest single process)."""
    stats_file = work / "time.txt"
    full = [TIME_BIN, "-v", "-o", str(stats_file), *cmd] if TIME_BIN else [sys.executable, "-c", RUSAGE_WRAPPER, str(stats_file), *cmd]
    with (work / "stdout.log").open("w") as out, (work / "stderr.log").open("w") as err:
        began = time.perf_counter()
        proc = subprocess.run(full, stdout=out, stderr=err, env=env, cwd=work, check=False)
        seconds = time.perf_counter() - began
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} failed ({proc.returncode}); see {work / 'stderr.log'}")
    text = stats_file.read_text()
    if TIME_BIN:
        def field(label: str) -> float:
            return float(re.search(rf"{re.escape(label)}: ([0-9.]+)", text).group(1))  # type: ignore[union-attr]
        stats = {"max_rss_kb": field("Maximum resident set size (kbytes)"), "user_s": field("User time (seconds)"),
                 "sys_s": field("System time (seconds)")}
    else:
        stats = json.loads(text)
    return {"seconds": seconds, "peak_rss_mb": stats["max_rss_kb"] / 1024, "cpu_s": stats["user_s"] + stats["sys_s"]}


def onnx_mb(folder: Path) -> float:
    """The ONNX model's size (graph and external data) in ``folder``."""
    return sum(f.stat().st_size for f in folder.iterdir() if f.name.endswith((".onnx", ".onnx.data"))) / 2**20


def token_check(model: str, rows: list[dict[str, Any]], template: str) -> dict[str, Any]:
    """The token ids each side trains on, row by row: autotune's encode_example against Olive's template."""
    from autotune.data import Template, encode_example
    from autotune.models.loading import load_tokenizer

    tok = load_tokenizer(common.model_path(model))
    parsed = Template.parse(common.TEMPLATE, where="bench")
    n = PIPELINE["source_max_len"]
    ours = [encode_example(tok, parsed.prompt(r), parsed.answer(r), max_len=n)[0] for r in rows]
    theirs = [tok(template.format(**r), add_special_tokens=False, truncation=True, max_length=n)["input_ids"] for r in rows]
    return {"rows": len(rows), "tokens_autotune": sum(map(len, ours)), "tokens_olive": sum(map(len, theirs)),
            "rows_with_different_ids": sum(a != b for a, b in zip(ours, theirs, strict=True))}


def versions(python: str) -> dict[str, str]:
    code = ("import json, importlib.metadata as m\nout = {}\n"
            "for p in ('olive-ai', 'torch', 'transformers', 'peft', 'accelerate', 'datasets', 'onnxruntime', 'onnxruntime-genai'):\n"
            "    try:\n        out[p] = m.version(p)\n    except m.PackageNotFoundError:\n        pass\nprint(json.dumps(out))")
    try:
        done = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True)
        return json.loads(done.stdout)
    except (OSError, subprocess.CalledProcessError, json.JSONDecodeError) as exc:
        return {"error": str(exc)[:200]}


def tied_note(model: str) -> str:
    config = json.loads((common.model_path(model) / "config.json").read_text())
    if not config.get("tie_word_embeddings"):
        return ""
    return (" This model ties its embedding to the LM head: autotune's builder shares the int4 LM head with the embedding "
            "(GatherBlockQuantized), while Olive 0.13 replaces the builder's `make_embedding` with its own (`patched_make_embedding` "
            "in olive/passes/onnx/model_builder.py) that writes the embedding as an unquantized Gather with its own fp32 table, and "
            "builder 0.14.1 shares embeddings only for the rtn/k_quant algorithms anyway: Olive's model carries that extra table "
            "(the 'int4 model MB' column), and builds it.")


def measure_reruns(args: Any, root: Path, train_file: Path, template: str) -> dict[str, Any]:
    """Each side's identical command again in its last cold run's folders, ``args.reruns`` times, alternating."""
    last = args.repeats - 1
    commands = {
        "autotune": ([str(Path(sys.executable).with_name("autotune")), "run", "--config", str(root / f"autotune-{last}" / "config.json")],
                     dict(os.environ)),
        "olive": ([args.olive_python, "-m", "olive", "run", "--config", str(root / f"olive-{last}" / "config.json"),
                   "--disable_telemetry"], olive_env(root / f"olive-{last}")),
    }
    runs: list[dict[str, Any]] = []
    for rep in range(args.reruns):
        run: dict[str, Any] = {}
        for side in (["autotune", "olive"] if rep % 2 == 0 else ["olive", "autotune"]):
            cmd, env = commands[side]
            run[side] = measured(cmd, root / f"{side}-{last}", env)
            print(f"rerun {rep}: {side} {run[side]['seconds']:.2f} s wall, {run[side]['cpu_s']:.2f} s CPU", flush=True)
        run["time_ratio"] = run["autotune"]["seconds"] / run["olive"]["seconds"]
        run["cpu_ratio"] = run["autotune"]["cpu_s"] / run["olive"]["cpu_s"]
        runs.append(run)
    out: dict[str, Any] = {side: {key: common.stats([r[side][key] for r in runs]) for key in ("seconds", "cpu_s", "peak_rss_mb")}
                           for side in ("autotune", "olive")}
    out.update(runs=runs, time_ratio=common.stats([r["time_ratio"] for r in runs]),
               cpu_ratio=common.stats([r["cpu_ratio"] for r in runs]), goal_rerun_ratio_max=GOAL_RERUN)
    return out


# -- the report -------------------------------------------------------------------------------------
def main() -> None:
    args = common.parse_args(__doc__.splitlines()[0], repeats=2,
                             extra={"olive-python": "/work/olive-venv/bin/python", "olive-merge": "pass", "reruns": 0})
    if args.olive_merge not in ("pass", "builder"):
        raise SystemExit("--olive-merge: 'pass' (Olive's MergeAdapterWeights, as autotune) or 'builder' (the builder merges the adapter)")
    if not Path(args.olive_python).is_file():
        raise SystemExit(f"--olive-python: no such interpreter {args.olive_python} (see bench/README.md, section 9)")
    report = common.Report("vs_olive", args.model, "Cold single pipeline: autotune vs Olive 0.13")
    common.prepare(args.model)  # build or convert the input model before any timing
    root = common.RESULTS / f"work-vs_olive-{args.model}"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)

    # The rows autotune trains on (its training split, shuffled with split seed 0), for Olive.
    from autotune.data import load_data

    rows = load_data(common.load(autotune_config(args.model, root / "probe")).data_configs[0]).train
    train_file = root / "olive-train.jsonl"
    train_file.write_text("".join(json.dumps({"phrase": r["phrase"], "tone": r["tone"]}) + "\n" for r in rows))
    template = olive_template(args.model)
    tokens = token_check(args.model, rows, template)
    print(f"training rows {tokens['rows']}: tokens autotune {tokens['tokens_autotune']}, Olive {tokens['tokens_olive']}, "
          f"rows with different ids {tokens['rows_with_different_ids']}", flush=True)

    runs: list[dict[str, Any]] = []
    for rep in range(args.repeats):
        run: dict[str, Any] = {"repeat": rep}
        order = ["autotune", "olive"] if rep % 2 == 0 else ["olive", "autotune"]
        run["order"] = order
        for side in order:
            work = common.fresh(root / f"{side}-{rep}")
            if side == "autotune":
                run[side] = run_autotune(args.model, work)
            else:
                run[side] = run_olive(args.model, work, args.olive_python, train_file, template, args.olive_merge)
            r = run[side]
            print(f"repeat {rep}: {side} {r['seconds']:.1f} s, peak RSS {r['peak_rss_mb']:.0f} MB, phases "
                  + ", ".join(f"{k} {v:.1f}" for k, v in r["phases"].items()), flush=True)
        run["time_ratio"] = run["autotune"]["seconds"] / run["olive"]["seconds"]
        run["rss_ratio"] = run["autotune"]["peak_rss_mb"] / run["olive"]["peak_rss_mb"]
        runs.append(run)

    reruns = measure_reruns(args, root, train_file, template) if args.reruns > 0 else None

    sides = ("autotune", "olive")
    summary = {side: {key: common.stats([r[side][key] for r in runs]) for key in ("seconds", "peak_rss_mb", "cpu_s", "output_mb")}
               for side in sides}
    phases = {side: {name: common.stats([r[side]["phases"][name] for r in runs if name in r[side]["phases"]])
                     for name in runs[0][side]["phases"]} for side in sides}
    time_ratio = common.stats([r["time_ratio"] for r in runs])
    rss_ratio = common.stats([r["rss_ratio"] for r in runs])
    report.data.update({"pipeline": PIPELINE, "training_args": TRAINING_ARGS, "olive_merge": args.olive_merge,
                        "olive_python": args.olive_python, "olive_versions": versions(args.olive_python),
                        "autotune_versions": versions(sys.executable), "tokens": tokens, "olive_template": template,
                        "peak_rss_tool": "/usr/bin/time -v" if TIME_BIN else "getrusage(RUSAGE_CHILDREN)", "runs": runs,
                        "summary": summary, "phases": phases, "time_ratio": time_ratio, "rss_ratio": rss_ratio,
                        "goal_time_ratio_max": GOAL_TIME, "goal_rss_ratio_max": GOAL_RSS})
    av, ov = report.data["autotune_versions"], report.data["olive_versions"]
    merge_text = ("Olive's `MergeAdapterWeights` pass (a merged safetensors folder, as autotune's merge writes)"
                  if args.olive_merge == "pass"
                  else "no merge pass: Olive's ModelBuilder hands the adapter to the builder, which does NOT merge it: the LoRA "
                       "matrices become extra fp32 MatMul + Add branches beside the int4 base weights (a different model)")
    report.section("Setup", (
        f"{args.repeats} repeat(s), alternating which side goes first, median (min–max). Each side: a fresh process "
        f"(imports included) under {report.data['peak_rss_tool']}, fresh empty cache and output folders. Pipeline: LoRA r "
        f"{PIPELINE['r']} alpha {PIPELINE['alpha']} dropout {PIPELINE['lora_dropout']} on q_proj/v_proj, {PIPELINE['max_steps']} "
        f"steps of batch {PIPELINE['batch_size']}, lr {PIPELINE['learning_rate']} linear decay, no warm-up, AdamW (torch), seed "
        f"{PIPELINE['seed']}, fp32 (Olive's LoRA pass defaults to bfloat16: set to float32), no gradient checkpointing (Olive's "
        f"default: on) -> merge -> int4 ONNX, block {PIPELINE['block_size']}, symmetric, onnxruntime-genai's builder; no evaluator, "
        f"no baseline.\n\n"
        f"- autotune: `autotune run --config` (single run, `engine.evaluator` none, `validation_size: 0`, `loss_on: all`); "
        f"onnxruntime-genai {av.get('onnxruntime-genai')}, torch {av.get('torch')}, transformers {av.get('transformers')}, "
        f"peft {av.get('peft')}.\n"
        f"- Olive {ov.get('olive-ai')}: `olive run --config` from `{args.olive_python}`, LoRA -> {merge_text} -> ModelBuilder; "
        f"telemetry off; onnxruntime-genai {ov.get('onnxruntime-genai')}, torch {ov.get('torch')}, transformers "
        f"{ov.get('transformers')}, peft {ov.get('peft')}.\n"
        f"- Data: the same {tokens['rows']} training rows (autotune's split of `configs/data/tones.jsonl`, written to a JSON-lines "
        f"file for Olive's HuggingfaceContainer, line by line, padded per batch); tokens per side {tokens['tokens_autotune']} vs "
        f"{tokens['tokens_olive']} ({tokens['rows_with_different_ids']} rows with different ids: autotune tokenises prompt and "
        f"answer apart), loss on every token on both sides."))
    a, o = summary["autotune"], summary["olive"]
    report.section("Result", common.table(["", "wall s (process)", "peak RSS MB", "CPU s (user+sys)", "int4 model MB"], [
        ["autotune run", a["seconds"], a["peak_rss_mb"], a["cpu_s"], a["output_mb"]],
        ["olive run", o["seconds"], o["peak_rss_mb"], o["cpu_s"], o["output_mb"]],
        [f"ratio autotune / Olive (goals: time <= {GOAL_TIME}, RSS <= {GOAL_RSS})", time_ratio, rss_ratio, "", ""],
        ["goal met (median)", time_ratio["median"] <= GOAL_TIME, rss_ratio["median"] <= GOAL_RSS, "", ""]]))
    names = [n for n in ("lora", "merge", "build") if n in phases["autotune"] or n in phases["olive"]]
    rows_out = [[n, phases["autotune"].get(n, "–"), phases["olive"].get(n, "–")] for n in names]
    outside = {side: common.stats([r[side]["seconds"] - sum(r[side]["phases"].get(n, 0.0) for n in names) for r in runs]) for side in sides}
    report.data["outside_passes"] = outside
    rows_out += [["autotune: in-process total (run.json)", phases["autotune"].get("in_process_total", "–"), ""],
                 ["process wall time", a["seconds"], o["seconds"]],
                 ["outside the passes (wall - passes: start-up, imports before the first pass, config, data, export)",
                  outside["autotune"], outside["olive"]]]
    last = runs[-1]
    rows_out += [["train loop (Trainer's train_runtime, last repeat)", last["autotune"]["train"].get("train_runtime_s", "–"),
                  last["olive"]["train"].get("train_runtime_s", "–")],
                 ["training loss (last repeat)", last["autotune"]["train"].get("train_loss", "–"),
                  last["olive"]["train"].get("train_loss", "–")]]
    report.section("Phases (seconds, each side's own per-pass timing: autotune's run.json, Olive's footprint.json)",
                   common.table(["phase", "autotune", "Olive"], rows_out))
    report.section("Notes", (
        "autotune imports torch, transformers and peft inside its LoRA pass (so its `lora` includes them); Olive imports them "
        "before its first pass. Peak RSS is the largest single process's (neither side spawns a worker process for this pipeline: "
        "both train, merge and build in the one process). Olive keeps its own copy of each pass output in its cache and "
        "copies the final model to the output folder; autotune caches each pass output and exports the final model. "
        "The two sides use different onnxruntime-genai builders (versions above)." + tied_note(args.model)))
    if reruns:
        report.data["reruns"] = reruns
        ra, ro, rr = reruns["autotune"], reruns["olive"], reruns["time_ratio"]
        report.section("Cached rerun (the identical command again, caches and outputs in place)", common.table(
            ["", "wall s", "CPU s (user+sys)", "peak RSS MB"],
            [["autotune run", ra["seconds"], ra["cpu_s"], ra["peak_rss_mb"]],
             ["olive run", ro["seconds"], ro["cpu_s"], ro["peak_rss_mb"]],
             [f"ratio autotune / Olive (goal <= {GOAL_RERUN})", rr, reruns["cpu_ratio"], ""],
             ["goal met (median)", rr["median"] <= GOAL_RERUN, "", ""]]))
    report.write()


if __name__ == "__main__":
    main()
