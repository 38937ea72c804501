"""The benchmarks (`hindsight bench ...`, docs/BENCHMARKS.md) and the demo: the top layer, which only the
command line runs. Each benchmark returns its result (or prints its own report as it goes); the command
prints it."""
