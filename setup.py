"""lm: install with `pip install -e .` (CPU); extras below add accelerators, Hugging Face, evals,
trackers and GCS workdirs.

Requirements are ranges, not pins: a lower bound is the oldest version the test suite has passed
with, and an upper bound appears only where a known break exists. Exact versions for reproducible
CI live in constraints.txt (`pip install -c constraints.txt -e '.[test]'`). Ranges let pip keep a
runtime's own newer jax (Colab GPU/TPU, a cluster image) instead of replacing it with a CPU build.
"""

from setuptools import find_packages, setup

JAX = "0.10.2"  # jax and jaxlib move together; the accelerator extras name the same floor

EXTRAS = {
    # jax's own extras bring the matching jaxlib and the CUDA 12 / TPU plugin.
    "cuda12": [f"jax[cuda12]>={JAX}"],
    "tpu": [f"jax[tpu]>={JAX}"],
    "hf": ["safetensors>=0.8.0", "tokenizers>=0.23.3", "huggingface_hub>=2.4.0",
           "ml_dtypes>=0.7.0"],
    "eval": ["lm-eval>=0.4.13"],
    # mlflow-skinny is MLflow's tracking client (`import mlflow`) without the server stack.
    "trackers": ["wandb>=0.31.0", "mlflow-skinny>=3.17.2"],
    "gcs": ["etils[epath]>=1.15.0", "gcsfs>=2026.10.1"],
}
# The test suite imports every optional piece, so CI tests them for real.
EXTRAS["test"] = ["pytest>=9.0.3", "pytest-xdist>=3.8.0", "nbclient>=0.11.0", "nbformat>=5.11.1", "ipykernel>=7.4.0",
                  *EXTRAS["hf"], *EXTRAS["eval"], *EXTRAS["trackers"], *EXTRAS["gcs"]]

setup(
    name="lm",
    version="0.1.0",
    description="Transformer language models in JAX/Flax, with experiments that can say 'not yet'.",
    packages=find_packages(include=["lm", "lm.*", "bench", "bench.*"]),
    package_data={"lm.scaling": ["data/*.csv"]},  # the external curves the backtest checks against
    python_requires=">=3.11",
    install_requires=[
        f"jax>={JAX}",
        f"jaxlib>={JAX}",
        "flax>=0.12.8",
        "optax>=0.2.8",
        "orbax-checkpoint>=0.12.8",
        "ml_collections>=1.1.0",
        "absl-py>=2.5.1",
        "datasets>=5.2.0",
        "sentencepiece>=0.2.3",
        "tensorboardX>=2.6.5",
        "matplotlib>=3.11.2",
        "tqdm>=4.70.1",
        "numpy>=2.4.6",
        "scipy>=1.17.1",
        # the scaling fits hold BLAS to one thread (lm/scaling/fitting.py): 40x faster on busy machines
        "threadpoolctl>=3.8.0",
    ],
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["lm=lm.cli:main"]},
)
