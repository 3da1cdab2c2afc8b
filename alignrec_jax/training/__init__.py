"""Training: the loop both stages run, their tasks, the optimiser, checkpoints and logs."""
