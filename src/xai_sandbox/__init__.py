"""XAI-Sandbox."""
