"""Where the code runs: device and dtype policy, data parallelism, CPU threads, per-item seeds."""
