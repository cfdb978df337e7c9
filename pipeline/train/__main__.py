"""`python -m pipeline.train ...` = `pipeline train ...`; the form torchrun needs:
`torchrun --nproc_per_node 2 -m pipeline.train --data DIR ...`."""
import logging
import sys

from pipeline.cli.train import train
from pipeline.errors import PipelineError

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
try:
    train(prog_name="pipeline train")
except PipelineError as err:
    print(f"error: {err}", file=sys.stderr)
    sys.exit(2)
