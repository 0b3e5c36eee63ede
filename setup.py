"""easgd-jax: Elastic Averaging SGD and its relatives as Optax transformations."""

from setuptools import find_packages, setup

JAX = "jax>=0.7.0,<1.0"

setup(
    name="easgd-jax",
    version="0.1.0",
    description=(
        "Communication-efficient distributed training in JAX: EASGD, EAMSGD and their "
        "baselines as Optax transformations, with SPMD executors and a stability analysis."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["easgd_jax", "easgd_jax.*", "analysis", "analysis.*"]),
    py_modules=["launch"],
    install_requires=[
        JAX,
        "flax>=0.10.0,<0.14",
        "optax>=0.2.4,<0.3",
        "ml-collections>=1.0,<2.0",
        "absl-py>=2.0,<3.0",
        "numpy>=1.26",
        "scipy>=1.11",
        "matplotlib>=3.8",
        "tensorflow-datasets>=4.9.8,<5.0",
        # tfds 4.9.x imports importlib_resources without declaring it.
        "importlib_resources>=6.0",
        "array_record>=0.5",
        "mnist1d>=0.0.2,<0.1",
        "scikit-learn>=1.3",
        "orbax-checkpoint>=0.11,<0.13",
        "tensorboardX>=2.6,<3.0",
    ],
    extras_require={
        # The tests cover the Ray executor too (tests/e2e/test_ray_executor.py).
        # setuptools and wheel: tests/e2e/test_install.py builds the wheel without build isolation.
        "test": ["pytest>=8.0", "pytest-xdist>=3.5,<4", "ruff>=0.6", "ray>=2.40,<3",
                 "setuptools>=68", "wheel>=0.41"],
        "cuda12": ["jax[cuda12]>=0.7.0,<1.0"],
        "ray": ["ray>=2.40,<3"],
        # The viewer of the event files every run writes (tensorboard --logdir WORKDIR);
        # writing them needs only tensorboardX.
        "tensorboard": ["tensorboard>=2.15,<3"],
        # The PyTorch side of benchmarks/vs_pytorch.py; not needed to train. Without it the
        # script (and its test in tests/e2e/test_benchmarks.py) checks the one-line error instead.
        "bench": ["torch>=2.4,<3"],
        # The documentation site (docs/, sphinx-build -W -n): MyST Markdown, the furo theme,
        # and one notebook executed during the build (myst-nb runs it in an ipykernel).
        "docs": ["sphinx>=8.0,<9", "myst-nb>=1.1,<2", "myst-parser>=4.0,<6",
                 "furo>=2024.8.6", "ipykernel>=6.25,<8"],
    },
    # The PEP 561 marker: type checkers read the package's annotations.
    package_data={"easgd_jax": ["py.typed"]},
    entry_points={"console_scripts": ["easgd-launch=launch:run_main"]},
)
