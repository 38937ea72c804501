"""The learning loop: one run (`job.py`, `hindsight learn`) retrains the gate and refreshes the adapter
from the log when there is enough new signal, and records itself in the log."""
