"""Cost models: counts, memory, roofline latency and energy, for one NetSpec or a whole space."""
