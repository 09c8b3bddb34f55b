"""The training loop and what a run leaves behind: run directories, checkpoints, the run lock, stop
signals, command-line overrides, device sharding and the stall watchdog."""
