"""What a person reads after a build: `report.md` and the Pareto plot `pareto.png`."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from pipeline.atomic import atomic_path, write_text
from pipeline.build.loop import NEAR_BUDGET, BudgetOutcome
from pipeline.search import SearchResult


#: What the plot shows per device: round 1's search (over every budget), the outcomes, and every measured
#: subnet as (measured ms, top-1: evaluated where it was, else predicted).
DevicePlot = tuple[SearchResult, list[BudgetOutcome], list[tuple[float, float]]]


def plot_pareto(path: Path, device_results: dict[str, DevicePlot]) -> Path:
    """Per device: the search's predicted front, every measured subnet beside it, the
    budgets, and each emitted subnet's predicted -> measured latency."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(device_results), figsize=(6 * len(device_results), 4.5), squeeze=False)
    for ax, (device, (search, outcomes, measured)) in zip(axes[0], device_results.items()):
        front = sorted(search.front, key=lambda c: c.latency[device])
        ax.plot([c.latency[device] for c in front], [c.accuracy for c in front], ".-", color="0.6",
                label="Pareto front (round 1, predicted latency)")
        ax.plot([ms for ms, _ in measured], [acc for _, acc in measured], "x", color="k", ms=5,
                label=f"measured subnets ({len(measured)}; top-1 evaluated, else predicted)")
        for i, o in enumerate(outcomes):
            ax.axvline(o.budget_ms, color=f"C{i}", ls=":", lw=1)
            if o.emitted and o.candidate is not None:
                pred = o.candidate.latency[device]
                ax.annotate("", xy=(o.measured_ms, o.accuracy), xytext=(pred, o.accuracy),
                            arrowprops={"arrowstyle": "->", "color": f"C{i}"})
                # smaller for each larger budget: one subnet shipped for several budgets shows
                # as rings, not as one dot hiding the others
                ax.plot([o.measured_ms], [o.accuracy], "o", color=f"C{i}", ms=max(3, 10 - 2.5 * i),
                        label=f"{o.budget_ms:g} ms: {o.candidate.config.id} (measured)")
        ax.set_xlabel(f"latency on {device} (ms)")
        ax.set_ylabel("top-1 (%)")
        ax.set_title(device)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return path


def write_report(path: Path, summary: dict[str, Any], outcomes: Sequence[BudgetOutcome]) -> Path:
    """Markdown: the chosen subnets (predicted vs measured), per-stage times, accuracy and predictor info."""
    lines = [f"# Build report ({summary.get('status')})", "",
             f"Target `{summary['target']}`, devices {', '.join(summary['devices'])}, space `{summary['space']}`, "
             f"supernet `{summary['supernet']}`. Accuracy: {summary['accuracy'].get('kind')}.", "",
             "## Chosen subnets", "",
             "| device | budget ms | subnet | top-1 % | predicted ms | measured ms | within | MFLOPs | rounds | artifact |",
             "| --- | ---: | --- | ---: | ---: | ---: | :---: | ---: | ---: | --- |"]
    for o in outcomes:
        if o.emitted and o.candidate is not None:
            mflops = summary.get("mflops", {}).get(o.candidate.config.id, "")
            lines.append(f"| {o.device} | {o.budget_ms:g} | `{o.candidate.config.id}` | {o.accuracy:.2f} | "
                         f"{o.candidate.latency[o.device]:.3f} | {o.measured_ms:.3f} | yes | {mflops} | "
                         f"{o.n_rounds} | `{o.folder.name}/` |")
        else:
            lines.append(f"| {o.device} | {o.budget_ms:g} | none | | | | no | | {o.n_rounds} | {o.reason} |")
    lines += ["", "Every round times the reference, scales the latency model to the device's speed now and "
              "measures the top candidates per budget; a budget whose favourite misses is "
              "searched again, with the refitted model, under the budget x the worst predicted/measured "
              "ratio of the round's picks "
              "(predicted ms [interval: wider the farther a subnet is from those the model was fitted on]). "
              f"A favourite measured within {100 * NEAR_BUDGET:g} % under its budget is timed again in its round "
              "(\"timed twice\"). "
              "The most accurate measured subnet within a budget is timed again before it is emitted:", ""]
    lines += [round_line(o, r) for o in outcomes for r in o.rounds]
    lines += ["", "## Latency model (the last fit of each device)", "",
              "Held-out error: out-of-fold over the cross-validation that selected the kind.", "",
              "| device | kind | measured subnets | block table | held-out MAPE % | held-out within ±10 % |",
              "| --- | --- | ---: | :---: | ---: | ---: |"]
    for device, m in summary.get("latency_model", {}).items():
        mape, within = m.get("cv_mape"), m.get("cv_within_10pct")
        lines.append(f"| {device} | {m['kind']} | {m['n_train']} | {'yes' if m.get('blocks') else 'no'} | "
                     f"{'' if mape is None else f'{100 * mape:.1f}'} | "
                     f"{'' if within is None else f'{100 * within:.0f}'} |")
    lines += ["", "## Stages", "", "| stage | device | seconds | details |", "| --- | --- | ---: | --- |"]
    for s in summary["stages"]:
        details = ", ".join(f"{k}={v}" for k, v in s.items() if k not in ("name", "device", "seconds"))
        lines.append(f"| {s['name']} | {s.get('device') or ''} | {s['seconds']:.1f} | {details} |")
    lines += ["", f"Total: {summary.get('total_seconds', 0):.1f} s.", "", "![Pareto front](pareto.png)", ""]
    return write_text(path, "\n".join(lines))


def round_line(o: BudgetOutcome, r: dict[str, Any]) -> str:
    """The report's line for one entry of a budget's `rounds`: a search round, a confirming
    timing (at emit, or already in its round) or the reuse of a smaller budget's subnet."""
    head = f"- {o.device} {o.budget_ms:g} ms"
    if r["round"] == "reuse":
        return (f"{head}: `{r['subnet_id']}` (emitted for {r['from_budget_ms']:g} ms) "
                f"is more accurate than this budget's pick `{r['replaced']}`; reused")
    if r["round"] == "confirm":
        verdict = "within" if r["measured_ms"] <= o.budget_ms else "over: not emitted"
        when = "in its round" if r.get("timed_again_in_round") else "before emitting"
        return f"{head}: `{r['subnet_id']}` timed again {when}: {r['measured_ms']:.3f} ms ({verdict})"
    tried = ", ".join(f"`{m['subnet_id']}` {m['predicted_ms']:.3f}{_interval(m)} -> "
                      + (f"{m['measured_ms']:.3f}" if m["measured_ms"] is not None else "failed") + " ms"
                      + (" (timed twice)" if m.get("timed_again") else "")
                      for m in r["measured"]) or "nothing predicted within"
    speed = f" (model x {r['speed_scale']:.2f}: the device's speed now)" if "speed_scale" in r else ""
    return f"{head}, round {r['round']}: search budget {r['effective_ms']:.3f} ms{speed}; predicted -> measured: {tried}"


def _interval(measured: dict) -> str:
    bounds = measured.get("interval_ms")
    return f" [{bounds[0]:.3f}, {bounds[1]:.3f}]" if bounds else ""
