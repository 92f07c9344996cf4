"""lm: transformer language models in JAX/Flax, with experiments that can say "not yet".

Importing lm changes nothing in JAX. How many devices a CPU splits into (one unless asked) is
chosen by the entry points through `lm.devices.configure_cpu_devices`.
"""

__version__ = "0.1.0"
