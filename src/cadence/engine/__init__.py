"""The engine: the step loop (schedule, run, update), its async wrapper, and the offline API."""
