"""`pipeline compile ARCH --device NAME --out DIR`: one subnet, end to end, verified."""
from __future__ import annotations

import json
from pathlib import Path

import click

from pipeline.cli.options import device_option, json_option, load_arch, space_option
from pipeline.space import SearchSpace, resolve_arch


@click.command("compile")
@click.argument("arch")
@device_option(note="Device to compile for and verify on")
@space_option
@click.option("--supernet", "checkpoint", type=click.Path(dir_okay=False), default=None,
              help="Supernet checkpoint whose weights the subnet takes (default: seeded random weights).")
@click.option("--num-classes", type=int, default=1000, show_default=True,
              help="Classifier size when no --supernet is given.")
@click.option("--out", "out", type=click.Path(file_okay=False), default="artifacts", show_default=True,
              help="Parent folder; the artifact goes to OUT/<arch>-<device>/.")
@click.option("--no-verify", is_flag=True, help="Skip running the artifact on the device (manifest says unverified).")
@json_option
def compile_cmd(arch: str, device: str, space_name: str | None, checkpoint: str | None, num_classes: int,
                out: str, no_verify: bool, as_json: bool) -> None:
    """Compile ARCH (a0..a6 or a config file) for DEVICE, verify it there, write the artifact."""
    from pipeline.compile import artifact_dirname, compile_subnet
    from pipeline.device import load_profile

    profile = load_profile(device)
    supernet = None
    if checkpoint is not None:
        from pipeline.model import load_supernet

        # the checkpoint's space; a --space it was not built for is refused
        supernet = load_supernet(checkpoint, SearchSpace.load(space_name) if space_name else None)
        space, config = supernet.space, supernet.space.validate(resolve_arch(arch))
    else:
        space, config = load_arch(arch, space_name)
    name = Path(arch).stem if Path(arch).suffix else arch
    folder = Path(out) / artifact_dirname(config, profile.name, name)
    artifact = compile_subnet(space, config, profile, folder, supernet, num_classes, name=name,
                              checkpoint=checkpoint, verify=not no_verify)
    verification = artifact.manifest["verification"]
    if as_json:
        click.echo(json.dumps({"artifact": str(artifact.folder), "verified": artifact.verified,
                               "cache_hit": artifact.cache_hit, "manifest": artifact.manifest.data}))
        return
    state = (f"verified on {profile.name} (max abs diff {verification['max_abs_diff']:.2g})"
             if artifact.verified else "NOT verified (--no-verify)")
    coverage = artifact.manifest["build"]["kernel_coverage"]
    click.echo(f"{arch} ({config.id}) for {profile.name}: {state}; "
               f"kernels: {coverage['tuned']} tuned, {coverage['library']} library-scheduled, "
               f"{len(coverage['untuned_tasks'])} unscheduled of {coverage['total']}"
               f"{'; from the compile cache' if artifact.cache_hit else ''}")
    click.echo(str(artifact.folder))
