"""Zero-shot proxies: each against a hand computation, on subnets of a real supernet, memoised on disk."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.errors import ConfigError
from pipeline.search.proxies import (
    PROXIES,
    ProxyAccuracy,
    ProxyBatch,
    grad_norm,
    initialised_supernet,
    naswot,
    parse_proxy,
    synflow,
)
from pipeline.space import SearchSpace


@pytest.fixture(scope="module")
def space() -> SearchSpace:
    return SearchSpace.load("demo")


@pytest.fixture(scope="module")
def batch() -> ProxyBatch:
    g = torch.Generator().manual_seed(0)
    return ProxyBatch.of(torch.rand(16, 3, 32, 32, generator=g), torch.randint(0, 4, (16,), generator=g))


def test_naswot_is_logdet_of_hamming_kernel():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 40), nn.ReLU(), nn.Linear(40, 3))
    x = torch.randn(12, 5)
    codes = (model[0](x) > 0).numpy().astype(float)
    hamming = (codes[:, None, :] != codes[None, :, :]).sum(axis=2)
    expected = np.linalg.slogdet(codes.shape[1] - hamming)[1]
    assert naswot(model, x, None) == pytest.approx(expected, rel=1e-9)
    # a batch of one image repeated cannot be told apart: the kernel is singular
    assert naswot(model, x[:1].repeat(12, 1), None) == float("-inf")


def test_synflow_of_a_linear_chain():
    """No nonlinearity: R = 1^T |W2| |W1| 1 and each layer contributes R (R is linear in each)."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(6, 8, bias=False), nn.Linear(8, 3, bias=False))
    w1, w2 = (m.weight.detach().double().abs() for m in model)
    r = float(w2.sum(0) @ w1.sum(1))
    assert synflow(model, torch.zeros(4, 6), None) == pytest.approx(np.log(2 * r), rel=1e-9)
    assert model[0].weight.min() < 0  # the model itself is left as it was


def test_grad_norm_matches_autograd():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))
    x, y = torch.randn(8, 3, 8, 8), torch.randint(0, 5, (8,))
    grads = torch.autograd.grad(nn.functional.cross_entropy(model(x), y), [model[0].weight, model[3].weight])
    assert grad_norm(model, x, y) == pytest.approx(sum(float(g.norm()) for g in grads), rel=1e-6)


def test_proxy_source_on_supernet_subnets(space, batch, tmp_path, monkeypatch):
    net = initialised_supernet(space, num_classes=4, seed=0)
    rng = random.Random(0)
    configs = [space.smallest(), space.largest(), space.sample(rng)]
    extracted: list[str] = []
    real_extract = net.extract
    monkeypatch.setattr(net, "extract", lambda c: extracted.append(c.id) or real_extract(c))
    monkeypatch.setenv("PIPELINE_CACHE", str(tmp_path))
    scores = {}
    for name in PROXIES:
        source = ProxyAccuracy(net, name, batch)
        scores[name] = source.predict(configs + configs[:1])
        assert np.all(np.isfinite(scores[name])) and scores[name][0] == scores[name][3]
    assert len(extracted) == 3 * len(PROXIES)  # each subnet once per proxy
    # the largest subnet has more activation units and weights than the smallest
    assert scores["naswot"][1] > scores["naswot"][0] and scores["synflow"][1] > scores["synflow"][0]
    # a fresh source with the same weights and batch reads the scores from disk
    again = ProxyAccuracy(net, "naswot", batch).predict(configs)
    assert len(extracted) == 3 * len(PROXIES)
    np.testing.assert_allclose(again, scores["naswot"][:3])
    # other weights: another cache key, computed anew
    other = ProxyAccuracy(initialised_supernet(space, 4, seed=1), "naswot", batch)
    assert other.weights != ProxyAccuracy(net, "naswot", batch).weights
    assert len(list((tmp_path / "proxies").glob("naswot-*.jsonl"))) == 1
    other.predict(configs[:1])
    assert len(list((tmp_path / "proxies").glob("naswot-*.jsonl"))) == 2


def test_parse_proxy():
    assert parse_proxy("proxy:naswot") == ("naswot", False)
    assert parse_proxy("proxy:synflow@init") == ("synflow", True)
    for bad in ("naswot", "proxy:jacob", "proxy:naswot@later"):
        with pytest.raises(ConfigError):
            parse_proxy(bad)
