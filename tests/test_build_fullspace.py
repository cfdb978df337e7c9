"""`pipeline build` on the full AttentiveNAS space (x86-host, official accuracy predictor).

Two builds share one cache: from a checkpoint in the released file's layout (DDP's
`module.` keys inside 'state_dict'), and with no checkpoint at all (seeded random weights
in the official layout, which every manifest must say). Small settings, real parts:
full-space subnets exported, compiled, measured on this machine and verified against
PyTorch; the store and the latency model are real.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import kill_once_stored, reference_file
from pipeline.build import BuildConfig, run_build
from pipeline.compile import Manifest
from pipeline.errors import ConfigError
from pipeline.model import Supernet
from pipeline.search import EvolutionConfig
from pipeline.space import SearchSpace

#: Generous: any full-space subnet runs within it here, so each budget's first pick is emitted.
BUDGET_MS = 2000.0


def fullspace_config(out: Path, **overrides) -> BuildConfig:
    settings = dict(target="x86_64", devices=("x86-host",), space="attentivenas",
                    accuracy_trees=reference_file("attentivenas/acc_predictor_trees.npz"), out=out,
                    budgets_ms=(BUDGET_MS,), profile_subnets=4, profile_blocks=False, max_rounds=1, measure_top=1,
                    workers=2, evolution=EvolutionConfig(population=16, parents=4, generations=2))
    return BuildConfig(**{**settings, **overrides})


@pytest.fixture(scope="module")
def fullspace(tmp_path_factory):
    """The cache both builds use, and an official-layout checkpoint of seeded weights."""
    root = tmp_path_factory.mktemp("fullspace")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        state = Supernet(SearchSpace.load("attentivenas")).state_dict()
        for key, tensor in state.items():  # BN as trained, not as initialised: no dead residual branch
            if key.endswith(("bn.weight", "running_var")):
                tensor.uniform_(0.5, 1.5)
            elif key.endswith(("bn.bias", "running_mean")):
                tensor.normal_(0.0, 0.1)
    ckpt = root / "attentive_nas_pretrained.pth.tar"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 360}, ckpt)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PIPELINE_CACHE", str(root / "cache"))
        yield root, ckpt, state


def warm_compile_cache(fullspace_root: Path, cache: Path) -> None:
    """The module's compile cache linked into a fresh `cache` (no measurement store): a kill
    test then spends its minutes measuring and resuming, not recompiling the same subnets."""
    import os
    import shutil

    shutil.copytree(fullspace_root / "cache" / "compile", cache / "compile", copy_function=os.link)


def emitted_manifests(result) -> list[Manifest]:
    assert result.complete, [o.reason for o in result.outcomes]
    manifests = [Manifest.read(o.folder) for o in result.outcomes]
    for m, o in zip(manifests, result.outcomes):
        assert m.verified and m["subnet"]["space"] == "attentivenas"
        assert 192 <= m["subnet"]["config"]["resolution"] <= 288 and m["subnet"]["mflops"] > 150
        assert m["accuracy"]["source"] == "official AttentiveNAS predictor"
        assert m["latency"]["measured_ms"] <= o.budget_ms
    return manifests


def test_fullspace_build_from_an_official_checkpoint(fullspace):
    root, ckpt, state = fullspace
    result = run_build(fullspace_config(root / "ckpt", supernet=ckpt))
    (manifest,) = emitted_manifests(result)
    assert manifest["weights"]["source"] == "checkpoint" and manifest["weights"]["checkpoint"] == str(ckpt)
    # the artifact carries the checkpoint's weights: the same subnet extracted from a supernet
    # holding them gives the manifest's weights digest
    from pipeline.compile.cache import weights_digest

    net = Supernet(SearchSpace.load("attentivenas"))
    net.load_state_dict(state)
    config = result.outcomes[0].candidate.config
    assert manifest["weights"]["digest"] == weights_digest(net.extract(config).eval())
    assert result.summary["supernet"] == str(ckpt)


def test_fullspace_build_without_a_checkpoint_says_random_weights(fullspace):
    root, _, _ = fullspace
    result = run_build(fullspace_config(root / "random"))
    (manifest,) = emitted_manifests(result)
    assert manifest["weights"]["source"] == "random-init" and manifest["weights"]["checkpoint"] is None
    assert result.summary["supernet"].startswith("random-init")
    assert "random-init" in (result.out / "report.md").read_text()
    # the profile the first build measured is reused: no subnet is measured twice
    profile = next(s for s in result.summary["stages"] if s["name"] == "profile")
    assert profile["skipped"] == 4 and profile["measured"] == 0


def test_random_weights_need_the_official_predictor(tmp_path):
    with pytest.raises(ConfigError, match="--accuracy-trees"):
        BuildConfig(target="x86_64", space="attentivenas", out=tmp_path)


def test_fullspace_profiling_resumes_after_kill_9(fullspace, tmp_path):
    """`pipeline profile` on the full space, killed with -9 once a measurement is stored:
    what was stored stays as it was, and the same command measures only the rest."""
    import json
    import os
    import subprocess
    import sys

    from pipeline.device import MeasurementStore

    store_path = tmp_path / "m.sqlite"
    cmd = [str(Path(sys.executable).with_name("pipeline")), "profile", "--device", "x86-host", "--space", "attentivenas",
           "--subnets", "4", "--workers", "2", "--store", str(store_path), "--json"]
    env = {**os.environ, "PIPELINE_CACHE": str(tmp_path / "cache")}
    warm_compile_cache(fullspace[0], tmp_path / "cache")
    kill_once_stored(subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
                     store_path, rows=1)
    with MeasurementStore(store_path) as store:
        survived = {r.subnet_id: r.measured_at for r in store.records()}
    assert 1 <= len(survived) < 4, survived
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    summary = json.loads(rerun.stdout.strip().splitlines()[-1])["subnets"]
    assert summary["skipped"] == len(survived) and summary["measured"] == 4 - len(survived)
    with MeasurementStore(store_path) as store:
        after = {r.subnet_id: r.measured_at for r in store.records()}
    assert len(after) == 4 and all(after[i] == t for i, t in survived.items())


_BUILD = """
import sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from test_build_fullspace import fullspace_config
from pipeline.build import run_build
run_build(fullspace_config(Path(sys.argv[1])))
"""


def test_fullspace_build_resumes_after_kill_9(fullspace, tmp_path):
    """A full-space build killed with -9 once two profile measurements are stored: run again,
    it keeps those rows as they were, measures only the rest and emits a verified artifact."""
    import os
    import subprocess
    import sys

    from pipeline.device import MeasurementStore

    env = {**os.environ, "PIPELINE_CACHE": str(tmp_path / "cache")}
    cmd = [sys.executable, "-c", _BUILD.format(tests=str(Path(__file__).parent)), str(tmp_path / "out")]
    store_path = tmp_path / "cache" / "measurements.sqlite"
    warm_compile_cache(fullspace[0], tmp_path / "cache")
    kill_once_stored(subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
                     store_path, rows=2)
    with MeasurementStore(store_path) as store:
        survived = {r.subnet_id: r.measured_at for r in store.records()}
    assert 2 <= len(survived) < 4, survived
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PIPELINE_CACHE", str(tmp_path / "cache"))
        result = run_build(fullspace_config(tmp_path / "out"))
        emitted_manifests(result)
        with MeasurementStore(store_path) as store:
            after = {r.subnet_id: r for r in store.records()}
    profile = next(s for s in result.summary["stages"] if s["name"] == "profile")
    assert profile["skipped"] == len(survived) and profile["measured"] == 4 - len(survived)
    # kept as they were, except the emitted subnet's row, which the emit step times again
    assert all(after[i].measured_at == t or after[i].meta["source"] == "build-confirm" for i, t in survived.items())
    assert sum(after[i].measured_at == t for i, t in survived.items()) >= len(survived) - 1
