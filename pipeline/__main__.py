"""`python -m pipeline ...` runs the same CLI as the `pipeline` command (handy from a
checkout or a second work tree, where the installed script points elsewhere)."""
from pipeline.cli import main

main(prog_name="pipeline")
