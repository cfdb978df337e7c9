"""Benchmark: does attentive sampling help on our demo? Uniform vs BestUp vs WorstUp.

Trains the demo space on the synthetic set once per sampling method under the same
budget (same steps, batch, seed, data), then BN-recalibrates and validates the same set
of subnets (random ones plus the smallest and largest) in each supernet, and reports,
per method, the best top-1 among subnets under three FLOPs levels. The published claim
(AttentiveNAS) is BestUp >= uniform at each level, WorstUp in between or below.

Resumable: each trained supernet and each method's results are kept under
`<cache>/bench/sampling/`; a re-run only does what is missing.

    .venv/bin/python bench/sampling.py [--epochs 8] [--subnets 24]

Prints a table (with the Spearman correlation of FLOPs and top-1 over all evaluated
subnets, and how many random subnets beat the smallest) and writes bench/results/sampling.json.
"""
from __future__ import annotations

import json
import logging
import random
import time
from pathlib import Path

import click
from scipy.stats import kendalltau, spearmanr

from pipeline.atomic import write_json
from pipeline.model import load_supernet
from pipeline.paths import REPO_ROOT, cache_dir
from pipeline.space import SearchSpace
from pipeline.train import EvalData, evaluate, generate_synthetic, train
from pipeline.train.config import SAMPLER_METHODS
from pipeline.train.demo import DEMO_DATA, demo_config, demo_data_dir
from pipeline.train.state import STATE_FILE, SUPERNET_FILE

#: MFLOPs ceilings: roughly the demo space's 20th, 50th and 90th percentiles.
FLOPS_LEVELS = (2.0, 4.0, 8.0)
RESULTS = REPO_ROOT / "bench" / "results" / "sampling.json"


@click.command()
@click.option("--epochs", type=float, default=8.0, show_default=True, help="Training budget per method.")
@click.option("--subnets", type=int, default=24, show_default=True, help="Random subnets evaluated (plus smallest/largest).")
@click.option("--recalib-batches", type=int, default=4, show_default=True)
def main(epochs: float, subnets: int, recalib_batches: int) -> None:
    logging.basicConfig(level=logging.WARNING)
    space = SearchSpace.load("demo")
    data = generate_synthetic(demo_data_dir(), DEMO_DATA)
    rng = random.Random(123)
    configs = [space.smallest(), space.largest()] + [space.sample(rng) for _ in range(subnets)]
    work = cache_dir() / "bench" / "sampling"
    per_method: dict[str, dict] = {}
    for method in SAMPLER_METHODS:
        done = work / f"{method}-e{epochs:g}.json"
        if done.is_file():
            per_method[method] = json.loads(done.read_text())
            continue
        cfg = demo_config(sampler__method=method, epochs=epochs, checkpoint__dir=str(work / f"{method}-e{epochs:g}"))
        tick = time.perf_counter()
        ckpt = Path(cfg.checkpoint.dir) / SUPERNET_FILE
        if not ckpt.is_file():
            train(cfg, resume=(Path(cfg.checkpoint.dir) / STATE_FILE).is_file(), evaluate_at_end=False)
        train_s = time.perf_counter() - tick
        supernet = load_supernet(ckpt)
        eval_data = EvalData.from_root(data, cfg.image_size, recalib_batches=recalib_batches,
                                       batch_size=cfg.evaluation.batch_size)
        results = [r.to_dict() for r in evaluate(supernet, configs, eval_data)]
        best = {}
        for level in FLOPS_LEVELS:
            under = [r for r in results if r["mflops"] <= level]
            top = max(under, key=lambda r: r["top1"]) if under else None
            best[f"<={level:g}"] = {"top1": top["top1"], "mflops": top["mflops"], "id": top["id"]} if top else None
        flops, top1 = [r["mflops"] for r in results], [r["top1"] for r in results]
        per_method[method] = {"train_seconds": round(train_s, 1), "best": best, "subnets": results,
                              "smallest_top1": results[0]["top1"], "largest_top1": results[1]["top1"],
                              "mean_top1": round(sum(top1) / len(results), 3),
                              "spearman_flops_top1": round(float(spearmanr(flops, top1)[0]), 3),
                              "kendall_flops_top1": round(float(kendalltau(flops, top1)[0]), 3),
                              "random_beating_smallest": sum(t > top1[0] for t in top1[2:])}
        write_json(done, per_method[method], indent=1)

    header = f"{'method':<8} " + " ".join(f"{'best <=' + format(l, 'g') + ' MF':>14}" for l in FLOPS_LEVELS) + \
        f" {'smallest':>9} {'largest':>8} {'mean':>7} {'spearman':>9} {'>smallest':>10} {'train s':>8}"
    print(header)
    for method, res in per_method.items():
        cells = " ".join(f"{(b['top1'] if b else float('nan')):>14.2f}" for b in res["best"].values())
        print(f"{method:<8} {cells} {res['smallest_top1']:>9.2f} {res['largest_top1']:>8.2f} "
              f"{res['mean_top1']:>7.2f} {res.get('spearman_flops_top1', float('nan')):>9.2f} "
              f"{res.get('random_beating_smallest', -1):>10} {res['train_seconds']:>8.0f}")
    write_json(RESULTS, {
        "space": "demo", "data": "synthetic " + json.dumps(DEMO_DATA.__dict__), "epochs": epochs,
        "subnets_evaluated": len(configs), "flops_levels_mflops": list(FLOPS_LEVELS),
        "note": "timings disturbed by other work on the shared 2-core machine",
        "methods": {m: {k: v for k, v in r.items() if k != "subnets"} for m, r in per_method.items()},
        "subnets": {m: r["subnets"] for m, r in per_method.items()},
    }, indent=1)
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
