"""The search: spaces, the Optuna study, objectives and early stopping."""
