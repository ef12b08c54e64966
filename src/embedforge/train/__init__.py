"""Training: the LightningModule, its DataModule, gradient caching, DDP helpers, crash-safe resume."""
