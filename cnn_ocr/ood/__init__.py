"""Not-a-digit detection: scores (`scores`), their figures (`metrics`) and the per-run evaluation (`report`)."""
