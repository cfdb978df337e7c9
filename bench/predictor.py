"""Benchmark of the latency predictor (not a test): accuracy, speed, noise, transfer.

1. Accuracy on x86-host (demo space) at 25 / 50 / 100 training subnets (the first N of
   the sampling plan's training side), tested on the hash-held-out measured subnets:
   the CV-selected predictor and every candidate kind.
2. Batched prediction throughput of each kind on 1e5 random encoded configs.
3. Measurement noise on this shared machine: the same compiled subnets measured again
   and again with the profile's policy, and the spread recorded in the store.
4. Few-shot transfer to a second device (default: the emulated arm64 board, which must
   be up: `pipeline device up arm64-emulated`), measured on the first subnets of the
   plan; the x86-host predictor plus K = 5, 10, 20 of them vs a from-scratch fit on the
   same K, each tested on the target's other measured subnets.

Needs `pipeline profile --device x86-host --subnets N [--measure subnets,blocks]` first. Prints a table
and writes bench/results/predictor.json.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import random
import time

import numpy as np

from pipeline.atomic import write_json
from pipeline.paths import REPO_ROOT, cache_dir
from pipeline.predict import error_metrics, fit_kind, fit_predictor, plot_predicted_vs_measured
from pipeline.predict.fit import default_kinds
from pipeline.predict.transfer import transfer_study
from pipeline.device import load_profile
from pipeline.predict.workflow import load_block_table, load_dataset, split, stored_key_fields
from pipeline.compile.keys import current_key_fields
from pipeline.measure import block_store_path
from pipeline.space import SearchSpace, encode_many

from heldout import print_transfer

RESULTS = REPO_ROOT / "bench" / "results" / "predictor.json"
log = logging.getLogger("bench.predictor")


def accuracy(device: str, space_name: str, sizes: list[int], test_fraction: float, fields, block_fields) -> dict:
    data = load_dataset(load_profile(device), SearchSpace.load(space_name), key_fields=fields)
    train, test = split(data, test_fraction)
    lut = load_block_table(load_profile(device), SearchSpace.load(space_name), key_fields=block_fields)
    out = {"n_measured": len(data), "n_test": len(test), "n_train_available": len(train),
           "lut_entries": len(lut.entries) if lut else 0, "by_size": {}}
    if lut is not None and len(test):
        out["lut_coverage_test"] = float(lut.coverage(test.encoded).mean())
    for n in sizes:
        used = min(n, len(train))
        sub = train.subset(np.arange(len(train)) < used)
        chosen = fit_predictor(device, SearchSpace.load(space_name), sub.encoded, sub.latency_ms, sub.ids, lut=lut)
        plot = plot_predicted_vs_measured(test.latency_ms, chosen.predict(test.encoded),
                                          RESULTS.with_name(f"predictor_{device}_n{used}.png"),
                                          f"{device}: {chosen.kind}, n_train={used}, n_test={len(test)}")
        row = {"n_train": used, "requested": n, "selected": chosen.kind, "plot": str(plot.relative_to(REPO_ROOT)),
               "selected_metrics": error_metrics(test.latency_ms, chosen.predict(test.encoded)),
               "cv": chosen.info["cv"], "kinds": {}}
        for kind in default_kinds(lut):
            model = fit_kind(kind, device, SearchSpace.load(space_name), sub.encoded, sub.latency_ms, lut=lut)
            row["kinds"][kind] = error_metrics(test.latency_ms, model.predict(test.encoded))
        out["by_size"][str(n)] = row
    return out


def throughput(device: str, space_name: str, fields, block_fields, n: int = 100_000) -> dict:
    data = load_dataset(load_profile(device), SearchSpace.load(space_name), key_fields=fields)
    lut = load_block_table(load_profile(device), SearchSpace.load(space_name), key_fields=block_fields)
    space = SearchSpace.load(space_name)
    rng = random.Random(0)
    encoded = encode_many([space.sample(rng) for _ in range(n)])
    rates, cpu_rates = {}, {}
    for kind in default_kinds(lut):
        model = fit_kind(kind, device, SearchSpace.load(space_name), data.encoded, data.latency_ms, lut=lut)
        model.predict(encoded[:100])  # warm the table caches
        wall, cpu = zip(*(_timed(lambda: model.predict(encoded)) for _ in range(5)))
        rates[kind] = n / min(wall)
        cpu_rates[kind] = n / min(cpu)
    return {"n_configs": n, "predictions_per_s": rates, "predictions_per_cpu_s": cpu_rates,
            "load_avg_1min": os.getloadavg()[0]}


def _timed(fn) -> tuple[float, float]:
    """(wall, CPU) seconds of one call: on a shared machine the CPU time is the fairer number."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def noise(device: str, space_name: str, repeats: int, fields) -> dict:
    """Repeat whole measurements of a few already compiled subnets; spread of their medians."""
    from pipeline.device import MeasurementStore, load_profile, measure, open_session
    from pipeline.compile import INPUT_NAME, fixed_input

    profile = load_profile(device)
    data = load_dataset(load_profile(device), SearchSpace.load(space_name), key_fields=fields)
    order = np.argsort(data.latency_ms)
    picks = [order[0], order[len(order) // 2], order[-1]]
    subnets = []
    with open_session(profile) as session:
        for i in picks:
            config = data.configs[i]
            lib = cache_dir() / "profile" / device / f"{config.id}-{device}" / "model.so"
            if not lib.is_file():
                continue
            medians = [measure(session, lib, {INPUT_NAME: fixed_input(config.resolution)}, profile.policy).median_ms
                       for _ in range(repeats)]
            arr = np.asarray(medians)
            subnets.append({"subnet_id": config.id, "stored_ms": float(data.latency_ms[i]), "medians_ms": medians,
                            "cv": float(arr.std() / arr.mean()), "range_over_median": float(np.ptp(arr) / np.median(arr)),
                            "share_within_10pct_of_median": float(np.mean(np.abs(arr / np.median(arr) - 1) <= 0.10))})
    with MeasurementStore() as store:
        spreads = np.array([r.iqr_ms / r.median_ms for r in store.records(device)])
        ok = np.array([r.spread_ok for r in store.records(device)])
    return {"repeats": repeats, "subnets": subnets, "load_avg_1min": os.getloadavg()[0],
            "store_iqr_over_median": {"median": float(np.median(spreads)), "p90": float(np.percentile(spreads, 90))},
            "store_spread_ok_share": float(ok.mean())}


def transfer(device: str, target: str, space_name: str, n_target: int, n_source_train: int, fields,
             block_fields) -> dict:
    """`device`'s predictor -> `target` (another real device, e.g. the emulated arm64
    board: another ISA, compiler and runtime) from K of its measured subnets."""
    from pipeline.profiling import profile_subnets, sampling_plan

    source_data = load_dataset(load_profile(device), SearchSpace.load(space_name), key_fields=fields)
    train, _ = split(source_data, 0.3)
    train = train.subset(np.arange(len(train)) < n_source_train)
    source = fit_predictor(device, SearchSpace.load(space_name), train.encoded, train.latency_ms, train.ids,
                           lut=load_block_table(load_profile(device), SearchSpace.load(space_name), key_fields=block_fields))
    space = SearchSpace.load(space_name)
    profile_subnets(load_profile(target), space, sampling_plan(space, n_target))
    data = load_dataset(load_profile(target), space)
    study = transfer_study(source, target, data.encoded, data.latency_ms)
    study["source_kind"] = source.kind
    return study


def print_table(results: dict) -> None:
    acc = results.get("accuracy")
    if acc:
        print(f"\naccuracy on {results['device']} ({acc['n_test']} held-out subnets, LUT entries {acc['lut_entries']})")
        print(f"{'n_train':>7} {'kind':<10} {'RMSE ms':>8} {'MAPE %':>7} {'±5% %':>6} {'±10% %':>7} {'tau':>6}")
        for row in acc["by_size"].values():
            for kind, m in [("*" + row["selected"], row["selected_metrics"])] + list(row["kinds"].items()):
                print(f"{row['n_train']:>7} {kind:<10} {m['rmse_ms']:>8.3f} {100 * m['mape']:>7.2f} "
                      f"{100 * m['within_5pct']:>6.0f} {100 * m['within_10pct']:>7.0f} {m['kendall_tau']:>6.3f}")
    thr = results.get("throughput")
    if thr:
        print(f"\npredictions per second, batch of 1e5, best of 5 (load average {thr['load_avg_1min']:.1f}):")
        for k, v in thr["predictions_per_s"].items():
            print(f"  {k:<10} {v:>12,.0f} /s wall  {thr['predictions_per_cpu_s'][k]:>12,.0f} /s CPU")
    nz = results.get("noise")
    if nz:
        print(f"\nmeasurement noise (load average {nz['load_avg_1min']:.1f}):")
        for s in nz["subnets"]:
            print(f"  {s['subnet_id']} ~{np.median(s['medians_ms']):.3f} ms: CV {100 * s['cv']:.1f}%, "
                  f"range {100 * s['range_over_median']:.1f}% of median, within ±10% of median "
                  f"{100 * s['share_within_10pct_of_median']:.0f}% of {nz['repeats']} repeats")
        print(f"  store: IQR/median median {100 * nz['store_iqr_over_median']['median']:.1f}%, "
              f"p90 {100 * nz['store_iqr_over_median']['p90']:.1f}%")
    tr = results.get("transfer")
    if tr:
        print(f"\ntransfer {tr['source_device']} ({tr['source_kind']}) -> {tr['target_device']} "
              f"({tr['n_measured']} measured):")
        print_transfer(tr["by_k"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="x86-host")
    parser.add_argument("--space", default="demo")
    parser.add_argument("--sizes", default="25,50,100")
    parser.add_argument("--test-fraction", type=float, default=0.3)
    parser.add_argument("--noise-repeats", type=int, default=10)
    parser.add_argument("--transfer-subnets", type=int, default=40, help="0 skips the transfer study")
    parser.add_argument("--transfer-device", default="arm64-emulated")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: accuracy,throughput,noise")
    parser.add_argument("--kernels", choices=["current", "stored"], default="current",
                        help="fit on measurements of the current kernel code, or on the largest stored group")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    skip = set(filter(None, args.skip.split(",")))
    fields = block_fields = None
    if args.kernels == "stored":  # the largest group of each store (subnets, blocks)
        fields = stored_key_fields(args.device)[0][0]
        blocks = stored_key_fields(args.device, block_store_path()) if block_store_path().is_file() else []
        block_fields = blocks[0][0] if blocks else None
    current = current_key_fields(load_profile(args.device))
    results: dict = {"device": args.device, "space": args.space, "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                     "kernels": args.kernels, "kernel_db_hash_current": current[2],
                     "kernel_db_hash_subnets": (fields or current)[2],
                     "kernel_db_hash_blocks": (block_fields or current)[2]}
    if "accuracy" not in skip:
        results["accuracy"] = accuracy(args.device, args.space, [int(s) for s in args.sizes.split(",")],
                                       args.test_fraction, fields, block_fields)
    if "throughput" not in skip:
        results["throughput"] = throughput(args.device, args.space, fields, block_fields)
    if "noise" not in skip:
        results["noise"] = noise(args.device, args.space, args.noise_repeats, fields)
    if args.transfer_subnets:
        results["transfer"] = transfer(args.device, args.transfer_device, args.space, args.transfer_subnets, 50,
                                       fields, block_fields)
    print_table(results)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    # parts skipped in this run keep their values from the previous one
    previous = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    write_json(RESULTS, {**previous, **results}, indent=1)
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()
