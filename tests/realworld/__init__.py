"""Real-world fidelity: models nobody here designed, with the real backends as oracles."""
