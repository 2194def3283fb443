"""Search efficiency: Pareto hypervolume against the number of trials, TPE vs random sampling.

Cheap trials on the tiny model: LoRA (8 steps, all linear layers) over r {2, 4, 8, 16}, lora_dropout
{0, 0.1}, learning_rate log 1e-4..3e-2, and precision {int4, int8, fp32}; objectives accuracy (max)
and decode ms/token p50 (min). Each sampler runs with 3 seeds, N trials each, all studies sharing one
cache. The tiny Llama is first pre-trained (full fine-tune, plain torch, on the training split only)
so that accuracy responds to the LoRA parameters: from its random init every trial scores the same
(0.225: it always picks the shortest label). 60 steps leave it at about chance, where LoRA can still move it.
Hypervolume: both objectives scaled to [0, 1] by fixed bounds (the best and worst values over all
runs), reference point the worst corner; computed after each trial.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import common

SAMPLERS = ["tpe", "random"]
EVALUATOR = {"metrics": [
    {"name": "accuracy", "type": "accuracy", "sub_types": [{"name": "accuracy", "priority": 1}],
     "user_config": {"mode": "label_scoring", "perplexity": False}},
    {"name": "latency", "type": "latency", "sub_types": [{"name": "decode_ms_per_token_p50", "priority": 2}],
     "user_config": {"prompt_tokens": 32, "generate_tokens": 16, "warmup": 1, "repeats": 5}},
]}
ACC, LAT = "accuracy-accuracy", "latency-decode_ms_per_token_p50"


def pretrained_tiny(steps: int = 60) -> Path:
    """The tiny Llama after ``steps`` full fine-tuning steps on the training split (built once)."""
    folder = common.RESULTS / f"tiny-pretrained-{steps}"
    if (folder / "config.json").is_file():
        return folder
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from autotune.data import encode_example, load_data

    base = common.tiny_model()
    data = load_data(common.load(common.config("tiny", common.RESULTS / "unused")).data_configs[0])
    tok = AutoTokenizer.from_pretrained(str(base))
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    rows = []
    for row in data.train:
        ids, n = encode_example(tok, data.template.prompt(row), data.template.answer(row), max_len=data.source_max_len)
        rows.append((ids, [-100] * n + ids[n:]))
    torch.manual_seed(0)
    rng = random.Random(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(steps):
        batch = rng.sample(rows, 32)
        width = max(len(ids) for ids, _ in batch)
        ids = torch.tensor([i + [tok.pad_token_id] * (width - len(i)) for i, _ in batch])
        labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in batch])
        mask = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i, _ in batch])
        model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(str(folder), safe_serialization=True)
    tok.save_pretrained(str(folder))
    return folder


def one_study(sampler: str, seed: int, trials: int, work: Path, base: Path, lora_steps: int) -> dict[str, Any]:
    import autotune

    cfg = common.config("tiny", work / f"{sampler}-{seed}", evaluator=EVALUATOR, r=[2, 4, 8, 16], lora_dropout=[0.0, 0.1],
                        learning_rate={"low": 1e-4, "high": 3e-2, "log": True}, target_modules="all-linear",
                        precision=["int4", "int8", "fp32"], search={"sampler": sampler, "seed": seed, "max_samples": trials})
    cfg["input_model"]["model_path"] = str(base)
    cfg["passes"]["lora"]["training_args"].update(max_steps=lora_steps, logging_steps=lora_steps)
    cfg["engine"]["cache_dir"] = str(work / "cache")  # shared by every study
    began = time.perf_counter()
    frame = autotune.run(common.load(cfg)).trials.sort_values("number")
    points = [(r[ACC], r[LAT]) if r["state"] == "COMPLETE" else None for r in frame.to_dict("records")]
    return {"sampler": sampler, "seed": seed, "seconds": time.perf_counter() - began, "points": points}


def hypervolume(points: list[tuple[float, float]]) -> float:
    """Area dominated by ``points`` (both maximised, in [0, 1]) above the reference point (0, 0)."""
    area, best_y = 0.0, 0.0
    for x, y in sorted(points, reverse=True):
        if y > best_y:
            area += x * (y - best_y)
            best_y = y
    return area


def curves(runs: list[dict[str, Any]]) -> dict[str, Any]:
    done = [p for run in runs for p in run["points"] if p is not None]
    acc_lo, acc_hi = min(p[0] for p in done), max(p[0] for p in done)
    lat_lo, lat_hi = min(p[1] for p in done), max(p[1] for p in done)
    bounds = {"accuracy": [acc_lo, acc_hi], "decode_ms_per_token_p50": [lat_lo, lat_hi]}
    for run in runs:
        scaled: list[tuple[float, float]] = []
        run["hypervolume"] = []
        for p in run["points"]:
            if p is not None:
                scaled.append(((p[0] - acc_lo) / ((acc_hi - acc_lo) or 1), (lat_hi - p[1]) / ((lat_hi - lat_lo) or 1)))
            run["hypervolume"].append(hypervolume(scaled))
        final = run["hypervolume"][-1]
        run["trials_to_90pct"] = next((i + 1 for i, hv in enumerate(run["hypervolume"]) if hv >= 0.9 * final), None) if final else None
    return bounds


def main() -> None:
    args = common.parse_args(__doc__.splitlines()[0], extra={"trials": 16, "seeds": 3, "pretrain_steps": 60, "lora_steps": 8})
    report = common.Report("search_efficiency", "tiny", "Search efficiency: hypervolume vs trials")
    if args.model != "tiny":
        print("search_efficiency runs on the tiny model only (its trials must be cheap); ignoring --model", flush=True)
    common.warm_imports()
    base = pretrained_tiny(args.pretrain_steps)
    work = common.fresh(common.RESULTS / "work-search_efficiency")
    runs = []
    for seed in range(args.seeds):
        for sampler in SAMPLERS:
            runs.append(one_study(sampler, seed, args.trials, work, base, args.lora_steps))
            print(f"{sampler} seed {seed}: {runs[-1]['seconds']:.0f} s", flush=True)
    bounds = curves(runs)

    by = {s: [r for r in runs if r["sampler"] == s] for s in SAMPLERS}
    rows = [[t + 1, *[common.stats([r["hypervolume"][t] for r in by[s]]) for s in SAMPLERS]] for t in range(args.trials)]
    per_run = [[r["sampler"], r["seed"], r["hypervolume"][-1], r["trials_to_90pct"], sum(p is not None for p in r["points"]), r["seconds"]]
               for r in runs]
    reach = {s: common.stats([r["trials_to_90pct"] for r in by[s] if r["trials_to_90pct"]] or [float("nan")]) for s in SAMPLERS}
    report.data.update({"trials": args.trials, "seeds": args.seeds, "pretrain_steps": args.pretrain_steps, "lora_steps": args.lora_steps,
                        "bounds": bounds,
                        "runs": runs, "trials_to_90pct": reach})
    report.section("Setup", (
        f"Tiny model only (pre-trained {args.pretrain_steps} steps first, see the script's docstring). {args.seeds} seeds x "
        f"{SAMPLERS}, {args.trials} trials each, one shared cache. Trials: LoRA {args.lora_steps} steps "
        "(all-linear) over r {2,4,8,16}, dropout {0, 0.1}, lr log 1e-4..3e-2, precision {int4, int8, fp32}. "
        f"Objectives accuracy (max) and decode ms/token p50 (min, 1 warm-up + 5 repeats, 16 tokens), scaled by the fixed bounds {bounds}. "
        "Tiny-model latencies are fractions of a millisecond, so the latency objective is mostly noise. "
        "TPE's first 5 trials are its random start-up, the same points as the random sampler's with the same seed "
        "(so those trials are cache hits in the second study and the curves agree up to trial 5)."))
    report.section("Hypervolume after each trial: median (min–max) over seeds",
                   common.table(["trial", *SAMPLERS], rows))
    headers = ["sampler", "seed", "final hypervolume", "trials to 90% of final", "completed", "wall s"]
    report.section("Per run", common.table(headers, per_run))
    report.section("Trials to reach 90% of the final hypervolume", common.table(["sampler", "trials"], [[s, reach[s]] for s in SAMPLERS]))
    report.write()


if __name__ == "__main__":
    main()
