"""Loggers: one module each (csv_logs, tensorboard, mlflow, wandb); what they share in base."""
