"""Edge NAS deployment pipeline: AttentiveNAS supernet -> TVM artifacts per device.

Data flows one way: space -> supernet -> export/compile -> measure -> predict -> search
-> artifacts. Each step is a small library module; `pipeline.cli` is a thin layer on top.
"""
__version__ = "0.1.0"
