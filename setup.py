from setuptools import find_packages, setup

setup(
    name="lm",
    version="0.1.0",
    description="Transformer language models in JAX/Flax, with experiments that can say 'not yet'.",
    packages=find_packages(include=["lm", "lm.*", "bench", "bench.*"]),
    python_requires=">=3.10",
    install_requires=[
        "jax==0.10.2",
        "jaxlib==0.10.2",
        "flax==0.12.8",
        "optax==0.2.8",
        "orbax-checkpoint==0.12.8",
        "ml_collections>=1.0",
        "absl-py>=2.1",
        "datasets>=3.0",
        "sentencepiece>=0.2",
        "tensorboardX>=2.6",
        "matplotlib>=3.8",
        "tqdm>=4.66",
        "numpy>=1.26",
        "scipy>=1.12",
    ],
    extras_require={
        "test": ["pytest>=8", "nbclient>=0.10", "nbformat>=5.10", "ipykernel>=6.29"],
    },
    entry_points={"console_scripts": ["lm=lm.cli:main"]},
)
