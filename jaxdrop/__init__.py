"""jaxdrop: structured dropout for JAX and Flax."""
