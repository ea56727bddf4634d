"""Date-range batch jobs: one unit per day, persisted progress, resume, cancel, history."""
