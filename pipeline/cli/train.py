"""`pipeline train` and `pipeline evaluate`: thin wrappers over `pipeline.train`."""
from __future__ import annotations

import json
from pathlib import Path

import click

from pipeline.cli.options import json_option, space_option
from pipeline.errors import ConfigError
from pipeline.space import SearchSpace, SubnetConfig, resolve_arch
from pipeline.train.config import SAMPLER_METHODS


@click.command()
@click.option("--config", "recipe", default=None,
              help="Recipe YAML or built-in name (attentivenas, demo). Default: attentivenas; demo with --demo.")
@space_option
@click.option("--data", type=click.Path(file_okay=False), default=None,
              help="Image folders: DATA/train/<class>/*.jpg|png, DATA/val/<class>/...")
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Run folder (checkpoint.dir).")
@click.option("--epochs", type=float, default=None)
@click.option("--batch-size", type=int, default=None, help="Per process.")
@click.option("--sampler", type=click.Choice(SAMPLER_METHODS), default=None)
@click.option("--resume", is_flag=True, help="Continue exactly from the run folder's last saved state.")
@click.option("--demo", is_flag=True, help="Train the demo supernet on the synthetic set into the cache.")
def train(recipe: str | None, space_name: str | None, data: str | None, out: str | None, epochs: float | None,
          batch_size: int | None, sampler: str | None, resume: bool, demo: bool) -> None:
    """Train a supernet (sandwich rule, in-place distillation, attentive sampling).

    Runs alone or under `torchrun --nproc_per_node N -m pipeline.train ...` (DDP).
    """
    from pipeline.train import TrainConfig, demo_config, train as run_train, train_demo
    from pipeline.train.demo import demo_supernet_path

    overrides = dict(space=space_name, data=data, checkpoint__dir=out, epochs=epochs, batch_size=batch_size,
                     sampler__method=sampler)
    if demo:
        result = train_demo(demo_config(recipe or "demo", **overrides))
        click.echo(f"demo supernet: {demo_supernet_path()}")
    else:
        result = run_train(TrainConfig.load(recipe or "attentivenas", **overrides), resume=resume)
        click.echo(f"supernet: {result.checkpoint}")
    for r in result.evaluation:
        click.echo(f"  subnet {r.config.id}: {r.mflops:.2f} MFLOPs, top-1 {r.top1:.2f}%, loss {r.loss:.4f}")


def _configs(space: SearchSpace, archs: tuple[str, ...], configs_file: str | None) -> list[SubnetConfig]:
    """ARCH names (a0..a6, smallest, largest) or config files, plus a JSON/YAML list file."""
    named = {"smallest": space.smallest(), "largest": space.largest()}
    out = [named[a] if a in named else resolve_arch(a) for a in archs]
    if configs_file:
        import yaml

        raw = yaml.safe_load(Path(configs_file).read_text())
        if not isinstance(raw, list):
            raise ConfigError(f"{configs_file} must hold a list of subnet configs")
        out += [SubnetConfig.from_dict(c) for c in raw]
    return out or [space.smallest(), space.largest()]


@click.command()
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False))
@click.option("--data", type=click.Path(exists=True, file_okay=False), required=True, help="Image folders root.")
@click.option("--arch", "archs", multiple=True,
              help="Subnet: a0..a6, smallest, largest or a config file (repeatable). Default: smallest and largest.")
@click.option("--configs", "configs_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="JSON/YAML file with a list of subnet configs.")
@click.option("--image-size", type=int, default=0,
              help="Crop size before resizing to each subnet (0: the training crop, else the largest resolution).")
@click.option("--recalib-batches", type=int, default=64, show_default=True)
@click.option("--batch-size", type=int, default=256, show_default=True)
@click.option("--workers", type=int, default=0, show_default=True)
@json_option
def evaluate(checkpoint: str, data: str, archs: tuple[str, ...], configs_file: str | None, image_size: int,
             recalib_batches: int, batch_size: int, workers: int, as_json: bool) -> None:
    """BN-recalibrate and validate subnets of the supernet CHECKPOINT on DATA."""
    from pipeline.model import load_checkpoint
    from pipeline.train import EvalData, evaluate as run_evaluate

    loaded = load_checkpoint(checkpoint)
    supernet = loaded.supernet
    configs = _configs(supernet.space, archs, configs_file)
    trained_crop = loaded.extra.get("train", {}).get("image_size")
    eval_data = EvalData.from_root(data, image_size or trained_crop or max(supernet.space.resolutions),
                                   recalib_batches=recalib_batches, batch_size=batch_size, workers=workers)
    results = run_evaluate(supernet, configs, eval_data)
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in results]))
        return
    for r in results:
        click.echo(f"{r.config.id}: {r.mflops:.2f} MFLOPs, top-1 {r.top1:.2f}%, loss {r.loss:.4f} ({r.images} images)")
