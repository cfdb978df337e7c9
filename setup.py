"""Packaging for `pipeline`: the edge NAS deployment tool.

Pins follow ../shared/TOOLCHAIN.md: torch 2.13.0 is the CPU build (an open range pulls
a multi-GB CUDA build), and apache-tvm-ffi 0.1.15 segfaults in MetaSchedule, so
0.1.14.post0 is pinned beside apache-tvm 0.27.0.post1.
"""
from setuptools import find_packages, setup

#: Top-level repo folders shipped as package data: installed package name -> repo folder.
SHIPPED_FOLDERS = {"pipeline.data.device_profiles": "device_profiles", "pipeline.data.kernels": "kernels"}

setup(
    name="pipeline",
    version="0.1.0",
    description="Train or load an AttentiveNAS supernet, compile its subnets with TVM, "
    "measure them on devices, predict latency and search per latency budget.",
    python_requires=">=3.11,<3.12",
    # The repo keeps device profiles and kernel databases at its top level (they are
    # edited and tuned there); the wheel carries them inside the package, where
    # pipeline.paths looks for them when not running from a checkout.
    packages=[*find_packages(include=["pipeline", "pipeline.*"]), *SHIPPED_FOLDERS],
    package_dir=SHIPPED_FOLDERS,
    package_data={"pipeline": ["data/*.yaml", "data/*.json", "data/supernets/*", "compile/examples/*.cc"],
                  "pipeline.data.device_profiles": ["*.yaml"], "pipeline.data.kernels": ["*/*.json.xz", "*/*.json"]},
    install_requires=[
        "torch==2.13.0",
        "apache-tvm==0.27.0.post1",
        "apache-tvm-ffi==0.1.14.post0",
        "onnx>=1.16",
        "onnxsim>=0.4.36",
        "onnxruntime>=1.18",
        "numpy>=1.26",
        "paramiko>=3.4",
        "psutil",
        "xgboost",
        "cloudpickle",
        "tornado",
        "pyyaml>=6",
        "click>=8.1",
        "tqdm>=4.66",
        "scipy>=1.11",
        "scikit-learn>=1.4",
        "pillow>=10",
        "matplotlib>=3.8",
        "jsonschema>=4",
    ],
    extras_require={"test": ["pytest>=8", "pytest-timeout>=2.3"]},
    entry_points={"console_scripts": ["pipeline=pipeline.cli:main"]},
)
