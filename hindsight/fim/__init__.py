"""Fill-in-the-middle training data for the embedded model (`hindsight build-fim-data`)."""
