"""One module per command (train, evaluate, predict, export-model): orchestration only."""
